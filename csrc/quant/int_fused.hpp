// Fused tiles of the integer matmul for few rows of x (decode) on AVX-512: up to 4 rows
// times up to 4 weight rows, read straight from their blocks. With so few rows the weight
// bytes are read once per call either way, and decoding them into a panel first costs
// twice the dot products themselves (measured), so these skip it.
//
// Same activation layout, dot products (DotU8 / DotS8) and per-64-value accumulation as
// int_tile.hpp's tiles; the namespace is the includer's (LLMCORE_QUANT_TILE_NS), as
// there. A weight's integer offset (q - 8 for Q4_0, q - 16 for Q5_0, q - 32 for Q6_K,
// Q8_0's flipped q - 128) enters the integer sum through xoff, the per-lane
// -c * (sum of 4 activations), as the dot product's starting value; Q4_K's float mins go
// through the half-block sums xc instead (int_fused_k.hpp).
#include "quant/int_tile.hpp"

#if defined(__AVX512BW__)
#include <cstring>

#include "quant/int_fused_k.hpp"

namespace llmcore::quant::LLMCORE_ISA_NS::LLMCORE_QUANT_TILE_NS {

// 64 nibbles of two blocks' 16 bytes of qs at A and B (B null: zeros) in element order:
// element j of a block in the low nibble of qs[j], j + 16 in its high one.
inline __m512i block_nibbles(const uint8_t* A, const uint8_t* B) {
  const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(A));
  const __m128i b = B ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(B)) : _mm_setzero_si128();
  const __m256i v = _mm256_inserti128_si256(_mm256_castsi128_si256(a), b, 1);  // [qsA, qsB]
  const __m256i nib = _mm256_set1_epi8(0x0F);
  const __m256i lo = _mm256_and_si256(v, nib), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), nib);
  const __m512i z = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);  // [Alo, Blo, Ahi, Bhi]
  return _mm512_shuffle_i64x2(z, z, _MM_SHUFFLE(3, 1, 2, 0));             // [Alo, Ahi, Blo, Bhi]
}

// The 32-value types, two blocks per 64 values: each names its dot product, block size,
// integer offset c and the 64 quants of blocks A and B (B null past the row's last block).
struct FusedQ4_0 {
  using D = DotU8;
  static constexpr int64_t kBytes = sizeof(BlockQ4_0);
  static int offset() { return 8; }
  static __m512i quants(const uint8_t* A, const uint8_t* B) {
    return block_nibbles(A + offsetof(BlockQ4_0, qs), B ? B + offsetof(BlockQ4_0, qs) : nullptr);
  }
};

// Q4_0's nibbles plus bit j of qh as bit 4 of element j: the two blocks' qh side by side
// are one 64-bit mask, one bit per byte of the vector.
struct FusedQ5_0 {
  using D = DotU8;
  static constexpr int64_t kBytes = sizeof(BlockQ5_0);
  static int offset() { return 16; }
  static __m512i quants(const uint8_t* A, const uint8_t* B) {
    const __m512i q = block_nibbles(A + offsetof(BlockQ5_0, qs), B ? B + offsetof(BlockQ5_0, qs) : nullptr);
    uint32_t ha, hb = 0;
    std::memcpy(&ha, A + offsetof(BlockQ5_0, qh), sizeof ha);
    if (B) std::memcpy(&hb, B + offsetof(BlockQ5_0, qh), sizeof hb);
    const auto k = static_cast<__mmask64>(uint64_t{ha} | uint64_t{hb} << 32);
    return _mm512_or_si512(q, _mm512_maskz_mov_epi8(k, _mm512_set1_epi8(16)));
  }
};

struct FusedQ8_0 {
  using D = DotS8;
  static constexpr int64_t kBytes = sizeof(BlockQ8_0);
  static int offset() { return DotS8::kOffsets ? 128 : 0; }
  static __m512i quants(const uint8_t* A, const uint8_t* B) {
    const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(A + offsetof(BlockQ8_0, qs)));
    const __m256i b = B ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(B + offsetof(BlockQ8_0, qs)))
                        : _mm256_setzero_si256();
    return _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1);
  }
};

// Blocks of 32 with one fp16 scale d at their start: lanes 0..7 of 64 values take block A's
// d and x block, lanes 8..15 block B's.
template <int MR, int NR, class F>
void legacy_fused_tile(const FusedArgs& a) {
  using D = typename F::D;
  __m512 acc[MR][NR];
  zero_tiles(acc);
  const __m512i block_of_lane = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
  for (int64_t c = 0; 2 * c < a.nb; ++c) {
    const bool pair = 2 * c + 1 < a.nb;
    typename D::W w[NR];
    __m512 s[NR];
    for (int n = 0; n < NR; ++n) {
      const uint8_t* A = a.w + n * a.row_bytes + 2 * c * F::kBytes;
      const uint8_t* B = pair ? A + F::kBytes : nullptr;
      w[n] = D::prep(F::quants(A, B));
      const __m512 sa = _mm512_set1_ps(half_at(A));
      s[n] = _mm512_insertf32x8(sa, _mm256_set1_ps(B ? half_at(B) : 0.0f), 1);
    }
    for (int m = 0; m < MR; ++m) {
      const __m512i x = _mm512_loadu_si512(a.xq + m * a.xq_ld + 64 * c);
      const __m512i off = _mm512_loadu_si512(a.xoff + m * a.xoff_ld + 16 * c);
      const __m128 d4 = _mm_loadu_ps(a.xd + m * a.xd_ld + 2 * c);
      const __m512 xs = _mm512_permutexvar_ps(block_of_lane, _mm512_broadcast_f32x4(d4));
      for (int n = 0; n < NR; ++n)
        acc[m][n] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(D::dot_acc(off, w[n], x)), _mm512_mul_ps(s[n], xs), acc[m][n]);
    }
  }
  store_sums(acc, a);
}

template <int MR, int NR, class F>
struct LegacyTile {
  static void run(const FusedArgs& a) { legacy_fused_tile<MR, NR, F>(a); }
};

// The table of one kind's tiles, T<MR, NR, F>::run for MR, NR in 1..4.
template <template <int, int, class> class T, class F>
FusedFn pick_fused(int mr, int nr) {
  static constexpr FusedFn fns[4][4] = {
      {&T<1, 1, F>::run, &T<1, 2, F>::run, &T<1, 3, F>::run, &T<1, 4, F>::run},
      {&T<2, 1, F>::run, &T<2, 2, F>::run, &T<2, 3, F>::run, &T<2, 4, F>::run},
      {&T<3, 1, F>::run, &T<3, 2, F>::run, &T<3, 3, F>::run, &T<3, 4, F>::run},
      {&T<4, 1, F>::run, &T<4, 2, F>::run, &T<4, 3, F>::run, &T<4, 4, F>::run},
  };
  return fns[mr - 1][nr - 1];
}

// Whether type t has fused tiles; the one for mr x nr (each 1..4) rows of it; and the
// constant c whose -c * (sum of each 4 activations) the caller puts in xoff (0: unused).
inline bool has_fused(QType t) {
  return t == QType::q4_0 || t == QType::q5_0 || t == QType::q8_0 || t == QType::q4_k || t == QType::q6_k;
}
inline FusedFn fused_fn(QType t, int mr, int nr) {
  switch (t) {
    case QType::q4_0: return pick_fused<LegacyTile, FusedQ4_0>(mr, nr);
    case QType::q5_0: return pick_fused<LegacyTile, FusedQ5_0>(mr, nr);
    case QType::q8_0: return pick_fused<LegacyTile, FusedQ8_0>(mr, nr);
    case QType::q4_k: return pick_fused<Q4KTile, void>(mr, nr);
    case QType::q6_k: return pick_fused<Q6KTile, void>(mr, nr);
    default: return nullptr;
  }
}
inline int fused_offset(QType t) {
  switch (t) {
    case QType::q4_0: return FusedQ4_0::offset();
    case QType::q5_0: return FusedQ5_0::offset();
    case QType::q8_0: return FusedQ8_0::offset();
    case QType::q6_k: return 32;
    default: return 0;  // Q4_K: float mins, no integer offset
  }
}

}  // namespace llmcore::quant::LLMCORE_ISA_NS::LLMCORE_QUANT_TILE_NS
#define LLMCORE_QUANT_HAS_FUSED 1
#endif
