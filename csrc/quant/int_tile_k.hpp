// Register tiles of the K-quant integer matmul for many rows (int_operands_k.hpp): MR
// activation rows times NR decoded weight rows. Per 64 values and (row, weight row) pair:
// vpmaddubsw (quant x activation, pairs into 16 bits) and vpdpwssd (or vpmaddwd + add),
// which multiplies each pair by its half's integer scale and accumulates in 32 bits. The
// sums turn float once per super-block of 256: times the weight's d and the activations'
// xd. The offsets o_h then add their dot product with xc, as in int_tile.hpp.
//
// Integer sums are exact: a 16-bit pair sum is at most 2 * 63 * 127 = 16002 (no
// saturation), a 32-bit lane over a super-block (16 values) at most 16 * 128 * 63 * 127 <
// 2^24, so its conversion to float is exact too.
//
// Included by int_tile.hpp, in its namespace (LLMCORE_QUANT_TILE_NS) and after its helpers.
#include <cstring>

namespace llmcore::quant::LLMCORE_ISA_NS::LLMCORE_QUANT_TILE_NS {

inline int64_t scale_pattern(const int16_t* sc) {  // the 4 scales of a chunk's halves
  int64_t v;
  std::memcpy(&v, sc, sizeof v);
  return v;
}

#if defined(__AVX512BW__)
constexpr int kMRk = 4, kNRk = 2;

inline __m512i madd_scaled(__m512i acc, __m512i pairs, __m512i sc) {
#if LLMCORE_QUANT_VNNI
  return _mm512_dpwssd_epi32(acc, pairs, sc);
#else
  return _mm512_add_epi32(acc, _mm512_madd_epi16(pairs, sc));
#endif
}

// The float factors xd * d of the tile's pairs for up to kGroup super-blocks, computed
// before their integer sums so that each enters its multiply-add as a broadcast operand
// (measured: about 5% faster than a scalar product and broadcast per pair in the loop).
constexpr int64_t kGroup = 16;

template <int MR, int NR>
void tile_k(const TileKArgs& a) {
  __m512 acc[MR][NR];
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NR; ++n) acc[m][n] = _mm512_setzero_ps();
  alignas(64) float scale[kGroup][MR][NR];
  for (int64_t b0 = 0; b0 < a.sb_ld; b0 += kGroup) {
    const int64_t nb = a.sb_ld - b0 < kGroup ? a.sb_ld - b0 : kGroup;
    for (int64_t i = 0; i < nb; ++i)
      for (int m = 0; m < MR; ++m)
        for (int n = 0; n < NR; ++n) scale[i][m][n] = a.xd[m * a.sb_ld + b0 + i] * a.wd[n * a.sb_ld + b0 + i];
    for (int64_t i = 0; i < nb; ++i) {
      const int64_t b = b0 + i;
      __m512i isum[MR][NR];
      for (int m = 0; m < MR; ++m)
        for (int n = 0; n < NR; ++n) isum[m][n] = _mm512_setzero_si512();
      for (int c = 0; c < kQKK / 64; ++c) {
        const int64_t off = b * kQKK + 64 * c;
        __m512i w[NR], sc[NR], x[MR];
        for (int n = 0; n < NR; ++n) {
          w[n] = _mm512_loadu_si512(a.wq + n * a.q_ld + off);
          sc[n] = _mm512_set1_epi64(scale_pattern(a.wsc + n * a.h_ld + 16 * b + 4 * c));
        }
        for (int m = 0; m < MR; ++m) x[m] = _mm512_loadu_si512(a.xq + m * a.q_ld + off);
        for (int m = 0; m < MR; ++m)
          for (int n = 0; n < NR; ++n)
            isum[m][n] = madd_scaled(isum[m][n], _mm512_maddubs_epi16(w[n], x[m]), sc[n]);
      }
      for (int m = 0; m < MR; ++m)
        for (int n = 0; n < NR; ++n)
          acc[m][n] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[m][n]), _mm512_set1_ps(scale[i][m][n]), acc[m][n]);
    }
  }
  add_offsets(acc, a.wo, a.h_ld, a.xc, a.h_ld, a.h_ld);
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NR; ++n) a.y[m * a.ldy + n] = _mm512_reduce_add_ps(acc[m][n]);
}

#elif defined(__AVX2__)
constexpr int kMRk = 2, kNRk = 2;

template <int MR, int NR>
void tile_k(const TileKArgs& a) {
  __m256 acc[MR][NR];
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NR; ++n) acc[m][n] = _mm256_setzero_ps();
  for (int64_t b = 0; b < a.sb_ld; ++b) {
    __m256i isum[MR][NR];
    for (int m = 0; m < MR; ++m)
      for (int n = 0; n < NR; ++n) isum[m][n] = _mm256_setzero_si256();
    for (int c = 0; c < kQKK / 32; ++c) {  // both halves of a 64-value chunk share its scales
      const int64_t off = b * kQKK + 32 * c;
      __m256i w[NR], sc[NR];
      for (int n = 0; n < NR; ++n) {
        w[n] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.wq + n * a.q_ld + off));
        sc[n] = _mm256_set1_epi64x(scale_pattern(a.wsc + n * a.h_ld + 16 * b + 4 * (c / 2)));
      }
      for (int m = 0; m < MR; ++m) {
        const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.xq + m * a.q_ld + off));
        for (int n = 0; n < NR; ++n)
          isum[m][n] = _mm256_add_epi32(isum[m][n], _mm256_madd_epi16(_mm256_maddubs_epi16(w[n], x), sc[n]));
      }
    }
    for (int m = 0; m < MR; ++m) {
      const float xd = a.xd[m * a.sb_ld + b];
      for (int n = 0; n < NR; ++n) {
        const __m256 s = _mm256_set1_ps(xd * a.wd[n * a.sb_ld + b]);
        acc[m][n] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[m][n]), s, acc[m][n]);
      }
    }
  }
  add_offsets(acc, a.wo, a.h_ld, a.xc, a.h_ld, a.h_ld);
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NR; ++n) a.y[m * a.ldy + n] = hsum(acc[m][n]);
}

#else
constexpr int kMRk = 1, kNRk = 4;

template <int MR, int NR>
void tile_k(const TileKArgs& a) {
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NR; ++n) {
      const uint8_t* wq = a.wq + n * a.q_ld;
      const int8_t* xq = a.xq + m * a.q_ld;
      const int16_t* wsc = a.wsc + n * a.h_ld;
      float acc = 0.0f;
      for (int64_t b = 0; b < a.sb_ld; ++b) {
        int32_t isum = 0;
        for (int i = 0; i < kQKK; ++i) {
          const int half = 4 * (i / 64) + (i % 8) / 2;  // the chunk order's half of byte i
          isum += wsc[16 * b + half] * wq[b * kQKK + i] * xq[b * kQKK + i];
        }
        acc += static_cast<float>(isum) * (a.xd[m * a.sb_ld + b] * a.wd[n * a.sb_ld + b]);
      }
      for (int64_t h = 0; h < a.h_ld; ++h) acc += a.wo[n * a.h_ld + h] * a.xc[m * a.h_ld + h];
      a.y[m * a.ldy + n] = acc;
    }
}
#endif

// The tile function for mr x nr (mr <= kMRk, nr <= kNRk).
inline TileKFn tile_k_fn(int mr, int nr) {
  static constexpr TileKFn fns[4][4] = {
      {&tile_k<1, 1>, &tile_k<1, 2>, &tile_k<1, 3>, &tile_k<1, 4>},
      {&tile_k<2, 1>, &tile_k<2, 2>, &tile_k<2, 3>, &tile_k<2, 4>},
      {&tile_k<3, 1>, &tile_k<3, 2>, &tile_k<3, 3>, &tile_k<3, 4>},
      {&tile_k<4, 1>, &tile_k<4, 2>, &tile_k<4, 3>, &tile_k<4, 4>},
  };
  return fns[mr - 1][nr - 1];
}

}  // namespace llmcore::quant::LLMCORE_ISA_NS::LLMCORE_QUANT_TILE_NS
