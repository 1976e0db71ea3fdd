// The CUDA attention kernels (flash_cuda_fwd.cu, flash_cuda_bwd.cu), built only when CMake
// finds a CUDA compiler.
// Without it, flash_cuda_stub.cpp provides these entry points and reports "not built".
#pragma once

#include "flash_cpu.hpp"

namespace llmcore::attn {

// True when the extension was compiled with the CUDA kernels.
bool cuda_attention_built();

// Launch on `stream` (a cudaStream_t, may be null for the default stream). Buffers are
// device pointers; dtype bf16 or f16; the lse array is float. Throw std::runtime_error on
// a launch error or when the kernels were not built.
void flash_forward_cuda(const AttnProblem& p, const FwdBuffers& b, void* stream);
void flash_backward_cuda(const AttnProblem& p, const BwdBuffers& b, void* stream);

}  // namespace llmcore::attn
