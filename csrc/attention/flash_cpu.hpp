// Flash-style attention on the CPU: softmax(q k^T * scale + mask) v computed tile by tile
// with an online softmax, so the Tq x Tk score matrix is never materialised.
//
// Pure C++ (no Python, no torch): kernels take raw pointers, shapes and element strides.
// Layouts are (B, H, T, D) for q/o/dq, (B, Hkv, T, D) for k/v/dk/dv with any strides;
// lse is a contiguous (B, H, Tq) array of the accumulation type.
#pragma once

#include <cstdint>

#include "isa/isa.hpp"

namespace llmcore::attn {

// Storage type of q/k/v/o. bf16 and f32 accumulate in float, f64 in double; the mask
// and lse arrays always have the accumulation type.
enum class DType : int { f32 = 0, bf16 = 1, f64 = 2, f16 = 3 };  // f16: CUDA only

struct Strided {
  const void* data = nullptr;
  int64_t s[4] = {0, 0, 0, 0};  // element strides of (batch, head, position, dim)
};

struct AttnProblem {
  DType dtype = DType::f32;
  int64_t B = 0, H = 0, Hkv = 0, Tq = 0, Tk = 0, D = 0;
  double scale = 1.0;
  bool causal = false;        // bottom-right aligned: query i sees keys j <= i + Tk - Tq
  int64_t window = 0;         // > 0: query at position p sees keys in (p - window, p]
  Strided mask;               // optional additive (B, H, Tq, Tk) mask, strides may be 0
  const int64_t* kv_lens = nullptr;  // optional (B,): keys at positions >= kv_lens[b] are padding
  int threads = 1;
};

struct FwdBuffers {
  Strided q, k, v;
  Strided o;                // written
  void* lse = nullptr;      // (B, H, Tq) written; may be null (inference)
};

struct BwdBuffers {
  Strided q, k, v, o, dout;
  const void* lse = nullptr;
  Strided dq, dk, dv;       // written
};

// Throw std::invalid_argument for shapes or options no kernel accepts.
void check_problem(const AttnProblem& p);

// Run the variant of the active instruction-set level (flash_cpu_dispatch.cpp).
void flash_forward_cpu(const AttnProblem& p, const FwdBuffers& b);
void flash_backward_cpu(const AttnProblem& p, const BwdBuffers& b);

// The kernels of each variant (flash_cpu_fwd.cpp, flash_cpu_bwd.cpp).
LLMCORE_ISA_DECLARE(void flash_forward_cpu(const AttnProblem& p, const FwdBuffers& b);
                    void flash_backward_cpu(const AttnProblem& p, const BwdBuffers& b);)

}  // namespace llmcore::attn
