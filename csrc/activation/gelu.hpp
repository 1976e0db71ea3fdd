// GPT-2's GELU, the tanh approximation, forward and backward in one pass each.
//
//   gelu(x) = 0.5 x (1 + tanh(u)),  u = sqrt(2/pi) (x + 0.044715 x^3)
//
// computed as x * sigmoid(2u), which is the same function with a single exp and no
// cancellation in 1 + tanh(u) for negative x (torch's float32 result loses most of its
// digits below x = -4; this one keeps them). Elementwise over a contiguous buffer of
// float32 or bfloat16; bf16 values are computed in float32 and rounded once.
#pragma once

#include <cstdint>

#include "isa/isa.hpp"

namespace llmcore::activation {

enum class DType : int { f32 = 0, bf16 = 1 };

// The entry points run the variant of the active instruction-set level (gelu_dispatch.cpp).

// y[i] = gelu(x[i]) for i < n. y may alias x.
void gelu_tanh_forward(DType dtype, int64_t n, const void* x, void* y, int threads);

// dx[i] = dy[i] * gelu'(x[i]) for i < n. dx may alias dy.
void gelu_tanh_backward(DType dtype, int64_t n, const void* dy, const void* x, void* dx,
                        int threads);

// The kernels of each variant (gelu.cpp).
LLMCORE_ISA_DECLARE(
    void gelu_tanh_forward(DType dtype, int64_t n, const void* x, void* y, int threads);
    void gelu_tanh_backward(DType dtype, int64_t n, const void* dy, const void* x, void* dx,
                            int threads);)

}  // namespace llmcore::activation
