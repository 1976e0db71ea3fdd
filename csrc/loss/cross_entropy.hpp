// Row-wise softmax cross-entropy over a block of logits, for the fused LM-head loss.
//
// One call takes `rows` rows of `vocab` logits (fp32 or bf16, row stride `ld`), writes each
// row's negative log-likelihood of its target (fp32) and, when asked, overwrites the logits
// in place with the loss's gradient per row: (softmax(row) - onehot(target)) * grad_scale
// (the caller's 1 / number of targets, so no later pass scales the gradients). Each row is
// read from cache three times (max, sum of exponentials, normalise) instead of making
// the eight full memory passes the same computation takes as separate torch ops.
#pragma once

#include <cstdint>

#include "isa/isa.hpp"

namespace llmcore::loss {

enum class DType : int { f32 = 0, bf16 = 1 };

struct XentProblem {
  DType dtype = DType::f32;
  int64_t rows = 0;
  int64_t vocab = 0;
  void* logits = nullptr;  // rows x vocab, row stride ld (elements)
  int64_t ld = 0;
  const int64_t* targets = nullptr;  // rows; ignore_index rows give 0 loss and 0 gradient
  int64_t ignore_index = -100;
  float* nll = nullptr;  // rows
  bool grads = false;
  float grad_scale = 1.0f;
  int threads = 1;
};

// Throws std::invalid_argument for bad sizes and std::out_of_range for a target that is
// neither ignore_index nor a valid id, before touching any buffer.
void check_problem(const XentProblem& p);

// Run the variant of the active instruction-set level (cross_entropy_dispatch.cpp).
void softmax_cross_entropy(const XentProblem& p);

// The kernel of each variant (cross_entropy.cpp).
LLMCORE_ISA_DECLARE(void softmax_cross_entropy(const XentProblem& p);)

}  // namespace llmcore::loss
