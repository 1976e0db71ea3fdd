// Register tiles of the integer matmul: MR activation rows (8-bit, int_operands.hpp) times
// NR decoded weight rows, integer dot products per half-block of 16 values, scaled to
// float per half-block and accumulated in float lanes.
//
// The includer names the namespace (LLMCORE_QUANT_TILE_NS) so that two copies compiled
// for different targets (with and without AVX-512 VNNI, matmul_vnni.cpp) never merge.
// Per 64 bytes and (row, weight row) pair: one integer dot product (VNNI vpdpbusd, or
// vpmaddubsw + vpmaddwd), a conversion, a scale product and a fused multiply-add.
//
// The fused tiles for few rows, which read the weight blocks themselves, build on these
// (int_fused.hpp); K-quants times many rows take int_tile_k.hpp's tiles instead.
//
// Integer sums are exact: a lane sums 4 products of an unsigned byte <= 255 (only Q8_0's
// flipped bytes reach it; vpmaddubsw is only given bytes <= 128, so its 16-bit pair sums
// never saturate) and a signed byte |xq| <= 127.
#ifndef LLMCORE_QUANT_TILE_NS
#error "int_tile.hpp needs LLMCORE_QUANT_TILE_NS"
#endif

#include <cstdint>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "quant/int_operands.hpp"
#include "quant/int_operands_k.hpp"

#if defined(__AVX512VNNI__) || defined(LLMCORE_QUANT_FORCE_VNNI)
#define LLMCORE_QUANT_VNNI 1
#else
#define LLMCORE_QUANT_VNNI 0
#endif

namespace llmcore::quant::LLMCORE_ISA_NS::LLMCORE_QUANT_TILE_NS {

#if defined(__AVX512BW__)
constexpr int kMR = 4, kNR = 4;

// Dot products of 64 weight bytes with 64 activation bytes into 16 int32 lanes (lane i:
// values 4i..4i+3). U8: unsigned weight bytes; S8: Q8_0's signed ones.
struct DotU8 {
  using W = __m512i;
  static constexpr bool kOffsets = true;
  static W prep(__m512i w) { return w; }
  static __m512i dot(const W& w, __m512i x) {
#if LLMCORE_QUANT_VNNI
    return _mm512_dpbusd_epi32(_mm512_setzero_si512(), w, x);
#else
    return _mm512_madd_epi16(_mm512_maddubs_epi16(w, x), _mm512_set1_epi16(1));
#endif
  }
  // acc + dot(w, x)
  static __m512i dot_acc(__m512i acc, const W& w, __m512i x) {
#if LLMCORE_QUANT_VNNI
    return _mm512_dpbusd_epi32(acc, w, x);
#else
    return _mm512_add_epi32(acc, dot(w, x));
#endif
  }
};

#if LLMCORE_QUANT_VNNI
// q + 128 (the sign bit flipped) is unsigned; the offsets -128 d take the 128 back.
struct DotS8 {
  using W = __m512i;
  static constexpr bool kOffsets = true;
  static W prep(__m512i w) { return _mm512_xor_si512(w, _mm512_set1_epi8(static_cast<char>(0x80))); }
  static __m512i dot(const W& w, __m512i x) { return _mm512_dpbusd_epi32(_mm512_setzero_si512(), w, x); }
  static __m512i dot_acc(__m512i acc, const W& w, __m512i x) { return _mm512_dpbusd_epi32(acc, w, x); }
};
#else
// |w| times x with w's sign: |w| <= 128 keeps vpmaddubsw's pair sums below 2^15.
struct DotS8 {
  struct W {
    __m512i abs;
    __mmask64 neg;
  };
  static constexpr bool kOffsets = false;
  static W prep(__m512i w) { return {_mm512_abs_epi8(w), _mm512_movepi8_mask(w)}; }
  static __m512i dot(const W& w, __m512i x) {
    const __m512i sx = _mm512_mask_sub_epi8(x, w.neg, _mm512_setzero_si512(), x);
    return _mm512_madd_epi16(_mm512_maddubs_epi16(w.abs, sx), _mm512_set1_epi16(1));
  }
  static __m512i dot_acc(__m512i, const W& w, __m512i x) { return dot(w, x); }  // no offsets
};
#endif

// acc[m][n] += lanes of wo[n] * xc[m] over n floats: the offsets' dot products, as MR * NR
// independent chains (one chain per pair is bound by the multiply-add latency: measured,
// it cost a third of a K-quant tile's time).
template <int MR, int NR>
inline void add_offsets(__m512 (&acc)[MR][NR], const float* wo, int64_t wo_ld, const float* xc,
                        int64_t xc_ld, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) {
    const auto k = static_cast<__mmask16>(n - i >= 16 ? 0xFFFFu : (1u << (n - i)) - 1u);
    __m512 w[NR];
    for (int j = 0; j < NR; ++j) w[j] = _mm512_maskz_loadu_ps(k, wo + j * wo_ld + i);
    for (int m = 0; m < MR; ++m) {
      const __m512 x = _mm512_maskz_loadu_ps(k, xc + m * xc_ld + i);
      for (int j = 0; j < NR; ++j) acc[m][j] = _mm512_fmadd_ps(w[j], x, acc[m][j]);
    }
  }
}

template <int MR, int NR, class D>
void tile(const TileArgs& a) {
  __m512 acc[MR][NR];
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NR; ++n) acc[m][n] = _mm512_setzero_ps();
  // Lane i of a chunk of 64 values holds half-block i / 4 (weights) and block i / 8 (x).
  const __m512i half_of_lane = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
  const __m512i block_of_lane = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
  for (int64_t c = 0; c < a.kp / 64; ++c) {
    typename D::W w[NR];
    __m512 s[NR];
    for (int n = 0; n < NR; ++n) {
      w[n] = D::prep(_mm512_loadu_si512(a.wq + n * a.wq_ld + 64 * c));
      const __m128 s4 = _mm_loadu_ps(a.ws + n * a.ws_ld + 4 * c);
      s[n] = _mm512_permutexvar_ps(half_of_lane, _mm512_broadcast_f32x4(s4));
    }
    for (int m = 0; m < MR; ++m) {
      const __m512i x = _mm512_loadu_si512(a.xq + m * a.xq_ld + 64 * c);
      const __m128 d4 = _mm_loadu_ps(a.xd + m * a.xd_ld + 2 * c);
      const __m512 xs = _mm512_permutexvar_ps(block_of_lane, _mm512_broadcast_f32x4(d4));
      for (int n = 0; n < NR; ++n)
        acc[m][n] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(D::dot(w[n], x)), _mm512_mul_ps(s[n], xs), acc[m][n]);
    }
  }
  if (D::kOffsets) add_offsets(acc, a.wo, a.ws_ld, a.xc, a.xc_ld, a.kp / 16);
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NR; ++n) a.y[m * a.ldy + n] = _mm512_reduce_add_ps(acc[m][n]);
}

#elif defined(__AVX2__)
constexpr int kMR = 2, kNR = 4;

// As above, 32 bytes into 8 int32 lanes.
struct DotU8 {
  using W = __m256i;
  static constexpr bool kOffsets = true;
  static W prep(__m256i w) { return w; }
  static __m256i dot(const W& w, __m256i x) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), _mm256_set1_epi16(1));
  }
};

struct DotS8 {
  struct W {
    __m256i abs, sign;
  };
  static constexpr bool kOffsets = false;
  static W prep(__m256i w) { return {_mm256_abs_epi8(w), w}; }
  static __m256i dot(const W& w, __m256i x) {
    const __m256i sx = _mm256_sign_epi8(x, w.sign);
    return _mm256_madd_epi16(_mm256_maddubs_epi16(w.abs, sx), _mm256_set1_epi16(1));
  }
};

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// As in the AVX-512 version; n is a multiple of 4.
template <int MR, int NR>
inline void add_offsets(__m256 (&acc)[MR][NR], const float* wo, int64_t wo_ld, const float* xc,
                        int64_t xc_ld, int64_t n) {
  for (int64_t i = 0; i < n; i += 8) {
    const __m256i k = n - i >= 8 ? _mm256_set1_epi32(-1) : _mm256_set_epi32(0, 0, 0, 0, -1, -1, -1, -1);
    __m256 w[NR];
    for (int j = 0; j < NR; ++j) w[j] = _mm256_maskload_ps(wo + j * wo_ld + i, k);
    for (int m = 0; m < MR; ++m) {
      const __m256 x = _mm256_maskload_ps(xc + m * xc_ld + i, k);
      for (int j = 0; j < NR; ++j) acc[m][j] = _mm256_fmadd_ps(w[j], x, acc[m][j]);
    }
  }
}

template <int MR, int NR, class D>
void tile(const TileArgs& a) {
  __m256 acc[MR][NR];
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NR; ++n) acc[m][n] = _mm256_setzero_ps();
  const __m256i half_of_lane = _mm256_set_epi32(1, 1, 1, 1, 0, 0, 0, 0);
  for (int64_t c = 0; c < a.kp / 32; ++c) {
    typename D::W w[NR];
    __m256 s[NR];
    for (int n = 0; n < NR; ++n) {
      w[n] = D::prep(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.wq + n * a.wq_ld + 32 * c)));
      const __m128 s4 = _mm_loadu_ps(a.ws + n * a.ws_ld + 2 * c);
      s[n] = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(s4), half_of_lane);
    }
    for (int m = 0; m < MR; ++m) {
      const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.xq + m * a.xq_ld + 32 * c));
      const __m256 xs = _mm256_broadcast_ss(a.xd + m * a.xd_ld + c);
      for (int n = 0; n < NR; ++n)
        acc[m][n] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(D::dot(w[n], x)), _mm256_mul_ps(s[n], xs), acc[m][n]);
    }
  }
  if (D::kOffsets) add_offsets(acc, a.wo, a.ws_ld, a.xc, a.xc_ld, a.kp / 16);
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NR; ++n) a.y[m * a.ldy + n] = hsum(acc[m][n]);
}

#else
constexpr int kMR = 1, kNR = 4;

// Plain integer loops: the weight byte as an int, signed (Q8_0, no offsets) or not.
struct DotU8 {
  static constexpr bool kOffsets = true;
  static int weight(uint8_t q) { return q; }
};
struct DotS8 {
  static constexpr bool kOffsets = false;
  static int weight(uint8_t q) { return static_cast<int8_t>(q); }
};

template <int MR, int NR, class D>
void tile(const TileArgs& a) {
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NR; ++n) {
      const uint8_t* wq = a.wq + n * a.wq_ld;
      const int8_t* xq = a.xq + m * a.xq_ld;
      const float* ws = a.ws + n * a.ws_ld;
      const float* xd = a.xd + m * a.xd_ld;
      float acc = 0.0f;
      for (int64_t h = 0; h < a.kp / 16; ++h) {
        int sum = 0;
        for (int l = 0; l < 16; ++l) sum += D::weight(wq[h * 16 + l]) * xq[h * 16 + l];
        acc += ws[h] * xd[h / 2] * static_cast<float>(sum);
      }
      if (D::kOffsets)
        for (int64_t h = 0; h < a.kp / 16; ++h) acc += a.wo[n * a.ws_ld + h] * a.xc[m * a.xc_ld + h];
      a.y[m * a.ldy + n] = acc;
    }
}
#endif

template <class D>
TileFn pick(int mr, int nr) {
  static constexpr TileFn fns[4][4] = {
      {&tile<1, 1, D>, &tile<1, 2, D>, &tile<1, 3, D>, &tile<1, 4, D>},
      {&tile<2, 1, D>, &tile<2, 2, D>, &tile<2, 3, D>, &tile<2, 4, D>},
      {&tile<3, 1, D>, &tile<3, 2, D>, &tile<3, 3, D>, &tile<3, 4, D>},
      {&tile<4, 1, D>, &tile<4, 2, D>, &tile<4, 3, D>, &tile<4, 4, D>},
  };
  return fns[mr - 1][nr - 1];
}

// The tile function for mr x nr (each 1..4) and Q8_0's signed bytes or the others'.
inline TileFn tile_fn(bool signed_weights, int mr, int nr) {
  return signed_weights ? pick<DotS8>(mr, nr) : pick<DotU8>(mr, nr);
}

}  // namespace llmcore::quant::LLMCORE_ISA_NS::LLMCORE_QUANT_TILE_NS

// The K-quant tiles for many rows, in this namespace too.
#include "quant/int_tile_k.hpp"
