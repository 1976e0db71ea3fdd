// Dequantization of whole tensors, one instruction-set variant: OpenMP over rows.
// Compiled without floating-point contraction, so every value is the reference's.
#include <algorithm>
#include <cstdint>

#include "attention/simd.hpp"
#include "attention/tiles.hpp"
#include "quant/dequant_block.hpp"
#include "quant/quant.hpp"

namespace llmcore::quant::LLMCORE_ISA_NS {

int64_t dequant_row_f32(QType t, const uint8_t* src, int64_t nblocks, float* out) {
  return dequant_row(t, src, nblocks, out);
}

int64_t dequantize_rows(QType t, const uint8_t* src, int64_t rows, int64_t cols, void* dst,
                        OutDType out, int threads) {
  const TypeInfo& info = type_info(static_cast<int>(t));
  const int64_t nb = cols / info.block_elems, row_bytes = nb * info.block_bytes;
  int64_t bad = INT64_MAX;
  const int nthreads = rows * cols < (int64_t{1} << 16) ? 1 : std::max(1, threads);
  (void)nthreads;
#ifdef LLMCORE_OPENMP
#pragma omp parallel for num_threads(nthreads) schedule(static) reduction(min : bad) if (nthreads > 1)
#endif
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* s = src + r * row_bytes;
    int64_t b;
    if (out == OutDType::f32) {
      b = dequant_row(t, s, nb, static_cast<float*>(dst) + r * cols);
    } else {
      float* tmp = attn::LLMCORE_ISA_NS::thread_scratch<float>(static_cast<size_t>(cols));
      b = dequant_row(t, s, nb, tmp);
      auto* o = static_cast<attn::LLMCORE_ISA_NS::bf16*>(dst) + r * cols;
      for (int64_t c = 0; c < cols; ++c) o[c] = attn::LLMCORE_ISA_NS::from_acc<attn::LLMCORE_ISA_NS::bf16>(tmp[c]);
    }
    if (b >= 0) bad = std::min(bad, r * nb + b);
  }
  return bad == INT64_MAX ? -1 : bad;
}

}  // namespace llmcore::quant::LLMCORE_ISA_NS
