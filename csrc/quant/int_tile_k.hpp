// Register tiles of the K-quant integer matmul for many rows (int_operands_k.hpp): MR
// activation rows times NR decoded weight rows. Each (row, weight row) pair sums a group's
// bytes into one int32 lane per sub-block (vpdpbusd, 64 products an instruction), then
// per group: a conversion, the lane's float factor xs * ws and a multiply-add, and the
// offsets' multiply-add wo * xc. That is 11 vector multiplies per 512 values and pair for
// Q4_K, where a scale multiply per 64 values (sub-blocks mixed in a vector) takes 20.
//
// Without VNNI, vpmaddubsw's 16-bit pair sums add up in 16 bits for A rows of a group
// before one vpmaddwd widens them: A * 2 * 127 * q_max <= 32767 (A = 8 for Q4_K, 4 for
// Q5_K, 2 for Q6_K), so they never saturate. A lane's sum, at most S * 127 * q_max =
// 125,984 (Q5_K), converts to float exactly.
//
// Included by int_tile.hpp, in its namespace (LLMCORE_QUANT_TILE_NS) and after its helpers.
namespace llmcore::quant::LLMCORE_ISA_NS::LLMCORE_QUANT_TILE_NS {

// Group rows whose 16-bit pair sums may add up before widening, for quants <= q_max.
constexpr int rows_in_16_bits(int q_max) { return 32767 / (2 * 127 * q_max); }

#if defined(__AVX512BW__)
constexpr int kMRk = 4, kNRk = 4;

// t[m][n] = the lane sums of one group: S / 4 rows of 64 bytes on each side.
template <int MR, int NR, int S, int A>
inline void group_sums(__m512i (&t)[MR][NR], const uint8_t* wq, const int8_t* xq, int64_t ld) {
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NR; ++n) t[m][n] = _mm512_setzero_si512();
#if LLMCORE_QUANT_VNNI
  for (int i = 0; i < S / 4; ++i) {
    __m512i w[NR];
    for (int n = 0; n < NR; ++n) w[n] = _mm512_loadu_si512(wq + n * ld + 64 * i);
    for (int m = 0; m < MR; ++m) {
      const __m512i x = _mm512_loadu_si512(xq + m * ld + 64 * i);
      for (int n = 0; n < NR; ++n) t[m][n] = _mm512_dpbusd_epi32(t[m][n], w[n], x);
    }
  }
#else
  const __m512i ones = _mm512_set1_epi16(1);
  for (int i0 = 0; i0 < S / 4; i0 += A) {
    __m512i p[MR][NR];
    for (int m = 0; m < MR; ++m)
      for (int n = 0; n < NR; ++n) p[m][n] = _mm512_setzero_si512();
    for (int i = i0; i < i0 + A; ++i) {
      __m512i w[NR];
      for (int n = 0; n < NR; ++n) w[n] = _mm512_loadu_si512(wq + n * ld + 64 * i);
      for (int m = 0; m < MR; ++m) {
        const __m512i x = _mm512_loadu_si512(xq + m * ld + 64 * i);
        for (int n = 0; n < NR; ++n) p[m][n] = _mm512_add_epi16(p[m][n], _mm512_maddubs_epi16(w[n], x));
      }
    }
    for (int m = 0; m < MR; ++m)
      for (int n = 0; n < NR; ++n) t[m][n] = _mm512_add_epi32(t[m][n], _mm512_madd_epi16(p[m][n], ones));
  }
#endif
}

template <int MR, int NR, int S, int A>
void tile_k(const TileKArgs& a) {
  constexpr int64_t G = kLanesK * S;
  __m512 acc[MR][NR];
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NR; ++n) acc[m][n] = _mm512_setzero_ps();
  for (int64_t g = 0; g < a.groups; ++g) {
    __m512i t[MR][NR];
    group_sums<MR, NR, S, A>(t, a.wq + g * G, a.xq + g * G, a.q_ld);
    const int64_t f = g * kLanesK;
    __m512 ws[NR], wo[NR];
    for (int n = 0; n < NR; ++n) {
      ws[n] = _mm512_loadu_ps(a.ws + n * a.f_ld + f);
      wo[n] = _mm512_loadu_ps(a.wo + n * a.f_ld + f);
    }
    for (int m = 0; m < MR; ++m) {
      const __m512 xs = _mm512_loadu_ps(a.xs + m * a.f_ld + f), xc = _mm512_loadu_ps(a.xc + m * a.f_ld + f);
      for (int n = 0; n < NR; ++n) {
        const __m512 s = _mm512_mul_ps(xs, ws[n]);
        acc[m][n] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(t[m][n]), s, acc[m][n]);
        acc[m][n] = _mm512_fmadd_ps(xc, wo[n], acc[m][n]);
      }
    }
  }
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NR; ++n) a.y[m * a.ldy + n] = _mm512_reduce_add_ps(acc[m][n]);
}

#elif defined(__AVX2__)
constexpr int kMRk = 2, kNRk = 2;

// As above for the half h of each group row: 32 bytes, lanes 8 h .. 8 h + 7.
template <int MR, int NR, int S, int A>
inline void half_sums(__m256i (&t)[MR][NR], const uint8_t* wq, const int8_t* xq, int64_t ld) {
  const __m256i ones = _mm256_set1_epi16(1);
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NR; ++n) t[m][n] = _mm256_setzero_si256();
  for (int i0 = 0; i0 < S / 4; i0 += A) {
    __m256i p[MR][NR];
    for (int m = 0; m < MR; ++m)
      for (int n = 0; n < NR; ++n) p[m][n] = _mm256_setzero_si256();
    for (int i = i0; i < i0 + A; ++i) {
      __m256i w[NR];
      for (int n = 0; n < NR; ++n) w[n] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wq + n * ld + 64 * i));
      for (int m = 0; m < MR; ++m) {
        const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + m * ld + 64 * i));
        for (int n = 0; n < NR; ++n) p[m][n] = _mm256_add_epi16(p[m][n], _mm256_maddubs_epi16(w[n], x));
      }
    }
    for (int m = 0; m < MR; ++m)
      for (int n = 0; n < NR; ++n) t[m][n] = _mm256_add_epi32(t[m][n], _mm256_madd_epi16(p[m][n], ones));
  }
}

template <int MR, int NR, int S, int A>
void tile_k(const TileKArgs& a) {
  constexpr int64_t G = kLanesK * S;
  __m256 acc[MR][NR];
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NR; ++n) acc[m][n] = _mm256_setzero_ps();
  for (int64_t g = 0; g < a.groups; ++g)
    for (int h = 0; h < 2; ++h) {
      __m256i t[MR][NR];
      half_sums<MR, NR, S, A>(t, a.wq + g * G + 32 * h, a.xq + g * G + 32 * h, a.q_ld);
      const int64_t f = g * kLanesK + 8 * h;
      for (int m = 0; m < MR; ++m) {
        const __m256 xs = _mm256_loadu_ps(a.xs + m * a.f_ld + f), xc = _mm256_loadu_ps(a.xc + m * a.f_ld + f);
        for (int n = 0; n < NR; ++n) {
          const __m256 s = _mm256_mul_ps(xs, _mm256_loadu_ps(a.ws + n * a.f_ld + f));
          acc[m][n] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(t[m][n]), s, acc[m][n]);
          acc[m][n] = _mm256_fmadd_ps(xc, _mm256_loadu_ps(a.wo + n * a.f_ld + f), acc[m][n]);
        }
      }
    }
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NR; ++n) a.y[m * a.ldy + n] = hsum(acc[m][n]);
}

#else
constexpr int kMRk = 1, kNRk = 4;

// Plain loops over the group order: lane L's bytes are 4 L .. 4 L + 3 of each group row.
template <int MR, int NR, int S, int A>
void tile_k(const TileKArgs& a) {
  constexpr int64_t G = kLanesK * S;
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NR; ++n) {
      const uint8_t* wq = a.wq + n * a.q_ld;
      const int8_t* xq = a.xq + m * a.q_ld;
      float acc = 0.0f;
      for (int64_t g = 0; g < a.groups; ++g)
        for (int lane = 0; lane < kLanesK; ++lane) {
          int32_t t = 0;
          for (int i = 0; i < S / 4; ++i)
            for (int e = 0; e < 4; ++e) {
              const int64_t at = g * G + 4 * kLanesK * i + 4 * lane + e;
              t += wq[at] * xq[at];
            }
          const int64_t f = g * kLanesK + lane;
          const float s = a.xs[m * a.f_ld + f] * a.ws[n * a.f_ld + f];
          acc += static_cast<float>(t) * s + a.xc[m * a.f_ld + f] * a.wo[n * a.f_ld + f];
        }
      a.y[m * a.ldy + n] = acc;
    }
}
#endif

// The tile function for mr x nr (mr <= kMRk, nr <= kNRk) of lane span S.
template <int S, int A, int MR, int NR = kNRk>
TileKFn tile_k_nr(int nr) {
  if (nr == NR) return &tile_k<MR, NR, S, A>;
  if constexpr (NR > 1) return tile_k_nr<S, A, MR, NR - 1>(nr);
  return nullptr;
}

template <int S, int A, int MR = kMRk>
TileKFn tile_k_mr(int mr, int nr) {
  if (mr == MR) return tile_k_nr<S, A, MR>(nr);
  if constexpr (MR > 1) return tile_k_mr<S, A, MR - 1>(mr, nr);
  return nullptr;
}

inline TileKFn tile_k_fn(QType t, int mr, int nr) {
  if (t == QType::q6_k) return tile_k_mr<16, rows_in_16_bits(63)>(mr, nr);
  if (t == QType::q5_k) return tile_k_mr<32, rows_in_16_bits(31)>(mr, nr);
  return tile_k_mr<32, rows_in_16_bits(15)>(mr, nr);
}

}  // namespace llmcore::quant::LLMCORE_ISA_NS::LLMCORE_QUANT_TILE_NS
