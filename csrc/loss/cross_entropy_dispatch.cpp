// The cross-entropy entry point: the argument checks shared by every variant, and the
// run-time choice of the instruction-set variant that does the work.
#include <cmath>
#include <stdexcept>
#include <string>

#include "loss/cross_entropy.hpp"

namespace llmcore::loss {

void check_problem(const XentProblem& p) {
  if (p.dtype != DType::f32 && p.dtype != DType::bf16)
    throw std::invalid_argument("cross entropy: dtype code must be 0 (float32) or 1 (bfloat16)");
  if (!std::isfinite(p.grad_scale))
    throw std::invalid_argument("cross entropy: grad_scale must be finite");
  if (p.rows < 0 || p.vocab < 1 || p.ld < p.vocab)
    throw std::invalid_argument("cross entropy: need rows >= 0, vocab >= 1 and a row stride >= vocab");
  if (p.rows == 0) return;
  if (!p.logits || !p.targets || !p.nll) throw std::invalid_argument("cross entropy: null buffer");
  for (int64_t r = 0; r < p.rows; ++r) {
    const int64_t t = p.targets[r];
    if (t != p.ignore_index && (t < 0 || t >= p.vocab))
      throw std::out_of_range("cross entropy: target " + std::to_string(t) + " (row " +
                              std::to_string(r) + ") is outside the vocabulary of " +
                              std::to_string(p.vocab) + " ids");
  }
}

void softmax_cross_entropy(const XentProblem& p) { LLMCORE_ISA_DISPATCH(softmax_cross_entropy(p)); }

}  // namespace llmcore::loss
