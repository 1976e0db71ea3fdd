// Fused tiles (int_fused.hpp) of the K-quants Q4_K and Q6_K: super-blocks of 256 values,
// 4 chunks of 64 each, read straight from the blocks. Included by int_fused.hpp, in the
// namespace of its includer, on AVX-512 only.
//
// Q4_K: w = d sc_j q - dmin m_j per sub-block j of 32. The scales ride on the dot products
// as the legacy blocks' d does; the mins are floats, so they add -dmin m_j * xc_h per
// half-block h (xc: the activation's half-block sums), the decoded panel's own products.
// Q6_K: w = d sc_h (q - 32) per half-block of 16, the -32 an integer offset through xoff.
#include <cstddef>
#include <cstring>

namespace llmcore::quant::LLMCORE_ISA_NS::LLMCORE_QUANT_TILE_NS {

// A tile's MR x NR accumulators: zeroed, and at the end each one's sum into y.
template <int MR, int NR>
inline void zero_tiles(__m512 (&acc)[MR][NR]) {
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NR; ++n) acc[m][n] = _mm512_setzero_ps();
}
template <int MR, int NR>
inline void store_sums(const __m512 (&acc)[MR][NR], const FusedArgs& a) {
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NR; ++n) a.y[m * a.ldy + n] = _mm512_reduce_add_ps(acc[m][n]);
}

// Lane i of 64 values holds values 4i..4i+3: x block i / 8, half-block i / 4.
inline __m512i k_block_of_lane() { return _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0); }
inline __m512i k_half_of_lane() { return _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0); }

// The scales of chunk c's 64 activations (blocks 2c, 2c + 1 of the row's xd) per lane.
inline __m512 k_act_scales(const float* xd, int64_t chunk) {
  return _mm512_permutexvar_ps(k_block_of_lane(), _mm512_broadcast_f32x4(_mm_loadu_ps(xd + 2 * chunk)));
}

// Q4_K's 12 bytes of 6-bit factors as 16 bytes: sc_0..sc_7, then m_0..m_7 (the packing of
// unpack_scales_k4, undone for all 8 sub-blocks with 32-bit masks).
inline __m128i k4_scales_mins(const uint8_t* p) {
  uint32_t u[4];
  std::memcpy(u, p, 12);
  const uint32_t m6 = 0x3F3F3F3F, m4 = 0x0F0F0F0F, m2 = 0x03030303;
  u[3] = ((u[2] >> 4) & m4) | (((u[1] >> 6) & m2) << 4);  // m_4..m_7
  const uint32_t mins_lo = u[1] & m6;                     // m_0..m_3
  u[1] = (u[2] & m4) | (((u[0] >> 6) & m2) << 4);         // sc_4..sc_7
  u[2] = mins_lo;
  u[0] &= m6;  // sc_0..sc_3
  return _mm_loadu_si128(reinterpret_cast<const __m128i*>(u));
}

template <int MR, int NR, class F>
struct Q4KTile {
  // Per super-block and weight row: its scales d sc_j in lanes 0..7, and its mins
  // -dmin m_j, one per half-block, into every row's accumulator against xc.
  static void factors(const FusedArgs& a, const uint8_t* b, int64_t sb, int n, __m512 (&acc)[MR][NR], __m512& sc) {
    const __m512 f = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(k4_scales_mins(b + offsetof(BlockQ4_K, scales))));
    sc = _mm512_mul_ps(f, _mm512_set1_ps(half_at(b)));
    const __m512 mins = _mm512_mul_ps(f, _mm512_set1_ps(half_at(b + offsetof(BlockQ4_K, dmin))));
    const __m512i half_min = _mm512_set_epi32(15, 15, 14, 14, 13, 13, 12, 12, 11, 11, 10, 10, 9, 9, 8, 8);
    const __m512 o = _mm512_permutexvar_ps(half_min, mins);
    for (int m = 0; m < MR; ++m)
      acc[m][n] = _mm512_fnmadd_ps(o, _mm512_loadu_ps(a.xc + m * a.xc_ld + 16 * sb), acc[m][n]);
  }

  // Chunk c's 64 quants: byte l of qs[32c..] holds sub-block 2c's value l (low nibble) and
  // 2c + 1's (high).
  static __m512i quants(const uint8_t* b, int c) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + offsetof(BlockQ4_K, qs) + 32 * c));
    const __m256i nib = _mm256_set1_epi8(0x0F);
    const __m256i lo = _mm256_and_si256(v, nib), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), nib);
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
  }

  static void run(const FusedArgs& a) {
    using D = DotU8;
    __m512 acc[MR][NR];
    zero_tiles(acc);
    for (int64_t sb = 0; sb < a.nb; ++sb) {
      __m512 sc[NR];
      for (int n = 0; n < NR; ++n) factors(a, a.w + n * a.row_bytes + sb * sizeof(BlockQ4_K), sb, n, acc, sc[n]);
      for (int c = 0; c < 4; ++c) {
        // Lanes 0..7 take sub-block 2c's scale, 8..15 sub-block 2c + 1's.
        const __m512i sub = _mm512_add_epi32(_mm512_set1_epi32(2 * c), k_block_of_lane());
        typename D::W w[NR];
        __m512 s[NR];
        for (int n = 0; n < NR; ++n) {
          w[n] = D::prep(quants(a.w + n * a.row_bytes + sb * sizeof(BlockQ4_K), c));
          s[n] = _mm512_permutexvar_ps(sub, sc[n]);
        }
        for (int m = 0; m < MR; ++m) {
          const __m512i x = _mm512_loadu_si512(a.xq + m * a.xq_ld + 256 * sb + 64 * c);
          const __m512 xs = k_act_scales(a.xd + m * a.xd_ld, 4 * sb + c);
          for (int n = 0; n < NR; ++n)
            acc[m][n] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(D::dot(w[n], x)), _mm512_mul_ps(s[n], xs), acc[m][n]);
        }
      }
    }
    store_sums(acc, a);
  }
};

template <int MR, int NR, class F>
struct Q6KTile {
  // Chunk (h, k2) of 64 values: elements 128h + 64 k2 + i. Their low 4 bits are nibble k2
  // of ql[64h + i], their high 2 bits 2k and 2k + 1 of qh[32h + i % 32], k = 2 k2 + i / 32
  // (decode_q6_k).
  static __m512i quants(const uint8_t* b, int h, int k2) {
    const __m512i ql = _mm512_loadu_si512(b + offsetof(BlockQ6_K, ql) + 64 * h);
    const __m512i nib = _mm512_set1_epi8(0x0F);
    const __m512i lo = _mm512_and_si512(k2 ? _mm512_srli_epi16(ql, 4) : ql, nib);
    const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + offsetof(BlockQ6_K, qh) + 32 * h));
    // Per 16-bit lane shifts: the bits a byte takes from its neighbour are masked off.
    const __m512i shift = _mm512_inserti64x4(_mm512_set1_epi16(static_cast<int16_t>(4 * k2)),
                                             _mm256_set1_epi16(static_cast<int16_t>(4 * k2 + 2)), 1);
    const __m512i hb = _mm512_and_si512(
        _mm512_srlv_epi16(_mm512_inserti64x4(_mm512_castsi256_si512(qh), qh, 1), shift), _mm512_set1_epi8(3));
    return _mm512_or_si512(lo, _mm512_slli_epi16(hb, 4));
  }

  static void run(const FusedArgs& a) {
    using D = DotU8;
    __m512 acc[MR][NR];
    zero_tiles(acc);
    for (int64_t sb = 0; sb < a.nb; ++sb) {
      __m512 sc[NR];  // d * scales[h] of the 16 half-blocks
      for (int n = 0; n < NR; ++n) {
        const uint8_t* b = a.w + n * a.row_bytes + sb * sizeof(BlockQ6_K);
        const __m128i s8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + offsetof(BlockQ6_K, scales)));
        const __m512 d = _mm512_set1_ps(half_at(b + offsetof(BlockQ6_K, d)));
        sc[n] = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(s8)), d);
      }
      for (int c = 0; c < 4; ++c) {
        const __m512i half = _mm512_add_epi32(_mm512_set1_epi32(4 * c), k_half_of_lane());
        typename D::W w[NR];
        __m512 s[NR];
        for (int n = 0; n < NR; ++n) {
          w[n] = D::prep(quants(a.w + n * a.row_bytes + sb * sizeof(BlockQ6_K), c / 2, c % 2));
          s[n] = _mm512_permutexvar_ps(half, sc[n]);
        }
        for (int m = 0; m < MR; ++m) {
          const int64_t chunk = 4 * sb + c;
          const __m512i x = _mm512_loadu_si512(a.xq + m * a.xq_ld + 64 * chunk);
          const __m512i off = _mm512_loadu_si512(a.xoff + m * a.xoff_ld + 16 * chunk);
          const __m512 xs = k_act_scales(a.xd + m * a.xd_ld, chunk);
          for (int n = 0; n < NR; ++n)
            acc[m][n] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(D::dot_acc(off, w[n], x)), _mm512_mul_ps(s[n], xs),
                                        acc[m][n]);
        }
      }
    }
    store_sums(acc, a);
  }
};

}  // namespace llmcore::quant::LLMCORE_ISA_NS::LLMCORE_QUANT_TILE_NS
