// y = x W^T with W quantized, one instruction-set variant. 8-bit activations go to
// matmul_int.cpp; this file is the exact path, Acts::f32.
//
// Activations stay float32: a panel of W rows is
// dequantized once into per-thread scratch (exactly the reference values, see
// dequantize.cpp) and multiplied by every row of x with vector FMAs, so the only error is
// float32 accumulation, |y - y_exact| <= K * 2^-24 * sum_k |x_k w_k| (usually far less).
// OpenMP splits the output rows. Many rows of x (prefill) go through panels: the
// dequantization is amortised over all rows of x. A few rows (decode) of Q8_0 and Q4_0
// multiply straight from the blocks instead, each weight converted in registers to the
// same float the reference gives (d * q), so the bound is the same.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "attention/simd.hpp"
#include "attention/tiles.hpp"
#include "quant/dequant_block.hpp"
#include "quant/quant.hpp"

#pragma GCC diagnostic ignored "-Wpsabi"

namespace llmcore::quant::LLMCORE_ISA_NS {
namespace {

namespace simd = ::llmcore::attn::LLMCORE_ISA_NS;
using F = simd::Vec<float>;
constexpr int L = simd::Simd<float>::L;
constexpr int64_t kPanel = 16;  // W rows dequantized together (16 x K floats of scratch)

// y[r][n] = dot(x row r, w row n) for MR rows of x and NR rows of w; K is a multiple of L.
template <int MR, int NR>
inline void dots(const float* x, int64_t K, const float* w, float* y, int64_t ldy) {
  F acc[MR][NR];
  for (int r = 0; r < MR; ++r)
    for (int n = 0; n < NR; ++n) acc[r][n] = F{};
  for (int64_t k = 0; k < K; k += L) {
    F wv[NR];
    for (int n = 0; n < NR; ++n) wv[n] = simd::vload(w + n * K + k);
    for (int r = 0; r < MR; ++r) {
      const F xv = simd::vload(x + r * K + k);
      for (int n = 0; n < NR; ++n) acc[r][n] += xv * wv[n];
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int n = 0; n < NR; ++n) y[r * ldy + n] = simd::hsum<float>(acc[r][n]);
}

template <int MR>
inline void panel_rows(const float* x, int64_t K, const float* w, int64_t nr, float* y, int64_t ldy) {
  int64_t n = 0;
  for (; n + 4 <= nr; n += 4) dots<MR, 4>(x, K, w + n * K, y + n, ldy);
  for (; n < nr; ++n) dots<MR, 1>(x, K, w + n * K, y + n, ldy);
}

constexpr int kFusedMaxRows = 4;  // rows of x up to which Q8_0/Q4_0 skip the scratch

// Vector c (L values, in element order) of a block's weights, as the reference computes
// them: d * q for Q8_0, d * (q - 8) for Q4_0. `qs` points at the block's quants; they are
// loaded straight from the buffer into a vector (a copy of the block on the stack would
// make GCC convert them one by one).
inline F weights(const BlockQ8_0*, const uint8_t* qs, float d, int c) {
  // Bytes offset to unsigned (q + 128, by flipping the sign bit) and widened, then the
  // offset taken back: GCC 12 converts a byte vector straight from memory lane by lane,
  // but one it has operated on with a single zero-extension.
  typedef uint8_t Q __attribute__((vector_size(L)));
  using I = simd::Simd<float>::I;
  Q q;
  std::memcpy(&q, qs + c * L, sizeof q);
  const I v = __builtin_convertvector(q ^ 0x80, I) - 128;
  return __builtin_convertvector(v, F) * d;
}

inline F weights(const BlockQ4_0*, const uint8_t* qs, float d, int c) {
  typedef uint8_t Q __attribute__((vector_size(L)));
  using I = simd::Simd<float>::I;
  constexpr int kHalf = kQK / 2 / L;  // vectors per nibble half
  Q q;
  std::memcpy(&q, qs + (c % kHalf) * L, sizeof q);
  const Q nib = c < kHalf ? (q & 0xF) : (q >> 4);
  return __builtin_convertvector(__builtin_convertvector(nib, I) - 8, F) * d;
}

// y[r][0] = dot(x row r, this weight row) for MR rows of x, straight from the blocks
// (both block types: an fp16 d, then the quants).
template <class Block, int MR>
inline void fused_row(const uint8_t* wrow, int64_t nb, const float* x, int64_t K, float* y,
                      int64_t ldy) {
  static_assert(kQK % L == 0, "a block holds whole vectors");
  static_assert(offsetof(Block, d) == 0 && offsetof(Block, qs) == 2, "d, then the quants");
  F acc[MR];
  for (int r = 0; r < MR; ++r) acc[r] = F{};
  for (int64_t i = 0; i < nb; ++i) {
    const uint8_t* blk = wrow + i * static_cast<int64_t>(sizeof(Block));
    uint16_t dh;
    std::memcpy(&dh, blk, sizeof dh);
    const float d = half_to_float(dh);
    for (int c = 0; c < kQK / L; ++c) {
      const F w = weights(static_cast<const Block*>(nullptr), blk + 2, d, c);
      for (int r = 0; r < MR; ++r) acc[r] += w * simd::vload(x + r * K + i * kQK + c * L);
    }
  }
  for (int r = 0; r < MR; ++r) y[r * ldy] = simd::hsum<float>(acc[r]);
}

template <class Block>
void fused_matmul(const float* x, int64_t M, int64_t K, const uint8_t* w, int64_t N, float* y,
                  int nthreads) {
  const int64_t nb = K / kQK, row_bytes = nb * static_cast<int64_t>(sizeof(Block));
  (void)nthreads;
#ifdef LLMCORE_OPENMP
#pragma omp parallel for num_threads(nthreads) schedule(static) if (nthreads > 1)
#endif
  for (int64_t n = 0; n < N; ++n) {
    const uint8_t* wrow = w + n * row_bytes;
    switch (M) {
      case 1: fused_row<Block, 1>(wrow, nb, x, K, y + n, N); break;
      case 2: fused_row<Block, 2>(wrow, nb, x, K, y + n, N); break;
      case 3: fused_row<Block, 3>(wrow, nb, x, K, y + n, N); break;
      default: fused_row<Block, 4>(wrow, nb, x, K, y + n, N); break;
    }
  }
}

}  // namespace

void matmul(QType t, const float* x, int64_t M, int64_t K, const uint8_t* w, int64_t N, float* y,
            int threads, Acts acts) {
  if (acts == Acts::int8) return matmul_int(t, x, M, K, w, N, y, threads);
  const TypeInfo& info = type_info(static_cast<int>(t));
  const int64_t nb = K / info.block_elems, row_bytes = nb * info.block_bytes;
  const int64_t npanels = (N + kPanel - 1) / kPanel;
  const int nthreads = M * N * K < (int64_t{1} << 18) ? 1 : std::max(1, threads);
  (void)nthreads;
  if (M <= kFusedMaxRows && t == QType::q8_0) return fused_matmul<BlockQ8_0>(x, M, K, w, N, y, nthreads);
  if (M <= kFusedMaxRows && t == QType::q4_0) return fused_matmul<BlockQ4_0>(x, M, K, w, N, y, nthreads);
#ifdef LLMCORE_OPENMP
#pragma omp parallel for num_threads(nthreads) schedule(static) if (nthreads > 1)
#endif
  for (int64_t p = 0; p < npanels; ++p) {
    const int64_t n0 = p * kPanel, nr = std::min(kPanel, N - n0);
    float* wbuf = simd::thread_scratch<float>(static_cast<size_t>(kPanel * K));
    for (int64_t r = 0; r < nr; ++r) dequant_row_f32(t, w + (n0 + r) * row_bytes, nb, wbuf + r * K);
    int64_t m = 0;
    for (; m + 2 <= M; m += 2) panel_rows<2>(x + m * K, K, wbuf, nr, y + m * N + n0, N);
    for (; m < M; ++m) panel_rows<1>(x + m * K, K, wbuf, nr, y + m * N + n0, N);
  }
}

}  // namespace llmcore::quant::LLMCORE_ISA_NS
