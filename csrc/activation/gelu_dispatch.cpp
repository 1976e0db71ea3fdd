// The GELU entry points: the run-time choice of the instruction-set variant.
#include "activation/gelu.hpp"

namespace llmcore::activation {

void gelu_tanh_forward(DType dtype, int64_t n, const void* x, void* y, int threads) {
  LLMCORE_ISA_DISPATCH(gelu_tanh_forward(dtype, n, x, y, threads));
}

void gelu_tanh_backward(DType dtype, int64_t n, const void* dy, const void* x, void* dx,
                        int threads) {
  LLMCORE_ISA_DISPATCH(gelu_tanh_backward(dtype, n, dy, x, dx, threads));
}

}  // namespace llmcore::activation
