// The CPU attention entry points: checks shared by every variant, and the run-time choice
// of the instruction-set variant that does the work.
#include <stdexcept>

#include "flash_cpu.hpp"

namespace llmcore::attn {

void check_problem(const AttnProblem& p) {
  if (p.B < 0 || p.H < 1 || p.Hkv < 1 || p.Tq < 0 || p.Tk < 0 || p.D < 1)
    throw std::invalid_argument("attention: sizes must be B, Tq, Tk >= 0 and H, Hkv, D >= 1");
  if (p.H % p.Hkv != 0) throw std::invalid_argument("attention: heads must be a multiple of kv_heads");
  if (p.D > 1024) throw std::invalid_argument("attention: head dim above 1024 is not supported");
  if (p.window < 0) throw std::invalid_argument("attention: window must be >= 0 (0 = none)");
  if (!(p.scale == p.scale)) throw std::invalid_argument("attention: scale is NaN");
  const int d = static_cast<int>(p.dtype);
  if (d < 0 || d > 3) throw std::invalid_argument("attention: unknown dtype code");
}

void flash_forward_cpu(const AttnProblem& p, const FwdBuffers& b) {
  LLMCORE_ISA_DISPATCH(flash_forward_cpu(p, b));
}

void flash_backward_cpu(const AttnProblem& p, const BwdBuffers& b) {
  LLMCORE_ISA_DISPATCH(flash_backward_cpu(p, b));
}

}  // namespace llmcore::attn
