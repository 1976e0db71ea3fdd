// Entry points of the CUDA kernels for builds without a CUDA compiler.
#include <stdexcept>

#include "flash_cuda.hpp"

#ifndef LLMCORE_CUDA_ATTENTION
namespace llmcore::attn {

bool cuda_attention_built() { return false; }

void flash_forward_cuda(const AttnProblem&, const FwdBuffers&, void*) {
  throw std::runtime_error("attention: llmcore was built without the CUDA kernels");
}

void flash_backward_cuda(const AttnProblem&, const BwdBuffers&, void*) {
  throw std::runtime_error("attention: llmcore was built without the CUDA kernels");
}

}  // namespace llmcore::attn
#endif
