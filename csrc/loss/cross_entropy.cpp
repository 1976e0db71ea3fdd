#include "loss/cross_entropy.hpp"

#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#include "attention/simd.hpp"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"

namespace llmcore::loss::LLMCORE_ISA_NS {
// The SIMD helpers of this instruction-set variant.
namespace attn = ::llmcore::attn::LLMCORE_ISA_NS;

namespace {

using attn::hsum;
using attn::vexp;
using attn::vmax;
using attn::vset;
using F = attn::Vec<float>;
constexpr int L = attn::Simd<float>::L;
using attn::bf16;

inline float scalar_load(const float* p) { return *p; }
inline float scalar_load(const bf16* p) { return attn::to_acc(*p); }
inline void scalar_store(float* p, float x) { *p = x; }
inline void scalar_store(bf16* p, float x) { *p = attn::from_acc<bf16>(x); }

inline F vec_load(const float* p) { return attn::vload(p); }
inline F vec_load(const bf16* p) { return attn::vload_bf16(p); }
inline void vec_store(float* p, F v) { attn::vstore(p, v); }
inline void vec_store(bf16* p, F v) { attn::vstore_bf16(p, v); }

// Four vector accumulators per pass: independent dependency chains, and each lane sums a
// quarter as many terms (less rounding over a 50k-entry row).
template <class T>
float row(T* x, int64_t V, int64_t target, bool grads, float scale) {
  const int64_t V4 = V - V % (4 * L), Vv = V - V % L;
  F m0 = vset(-INFINITY), m1 = m0, m2 = m0, m3 = m0;
  for (int64_t j = 0; j < V4; j += 4 * L) {
    m0 = vmax<float>(m0, vec_load(x + j));
    m1 = vmax<float>(m1, vec_load(x + j + L));
    m2 = vmax<float>(m2, vec_load(x + j + 2 * L));
    m3 = vmax<float>(m3, vec_load(x + j + 3 * L));
  }
  for (int64_t j = V4; j < Vv; j += L) m0 = vmax<float>(m0, vec_load(x + j));
  const F mv = vmax<float>(vmax<float>(m0, m1), vmax<float>(m2, m3));
  float m = -INFINITY;
  for (int i = 0; i < L; ++i) m = std::fmax(m, mv[i]);
  for (int64_t j = Vv; j < V; ++j) m = std::fmax(m, scalar_load(x + j));
  const F mb = vset(m);
  F s0 = vset(0.0f), s1 = s0, s2 = s0, s3 = s0;
  for (int64_t j = 0; j < V4; j += 4 * L) {
    s0 += vexp(vec_load(x + j) - mb);
    s1 += vexp(vec_load(x + j + L) - mb);
    s2 += vexp(vec_load(x + j + 2 * L) - mb);
    s3 += vexp(vec_load(x + j + 3 * L) - mb);
  }
  for (int64_t j = V4; j < Vv; j += L) s0 += vexp(vec_load(x + j) - mb);
  float s = hsum<float>((s0 + s1) + (s2 + s3));
  for (int64_t j = Vv; j < V; ++j) s += std::exp(scalar_load(x + j) - m);
  const float xt = scalar_load(x + target);
  const float nll = std::log(s) + (m - xt);  // m - xt first: exact when both are huge
  if (grads) {
    const float inv = scale / s;
    const F ib = vset(inv);
    for (int64_t j = 0; j < Vv; j += L) vec_store(x + j, vexp(vec_load(x + j) - mb) * ib);
    for (int64_t j = Vv; j < V; ++j) scalar_store(x + j, std::exp(scalar_load(x + j) - m) * inv);
    scalar_store(x + target, std::exp(xt - m) * inv - scale);
  }
  return nll;
}

template <class T>
void run(const XentProblem& p) {
  T* base = static_cast<T*>(p.logits);
#ifdef LLMCORE_OPENMP
#pragma omp parallel for num_threads(p.threads) schedule(static)
#endif
  for (int64_t r = 0; r < p.rows; ++r) {
    T* x = base + r * p.ld;
    const int64_t t = p.targets[r];
    if (t == p.ignore_index) {
      p.nll[r] = 0.0f;
      if (p.grads) std::memset(static_cast<void*>(x), 0, sizeof(T) * static_cast<size_t>(p.vocab));
      continue;
    }
    p.nll[r] = row(x, p.vocab, t, p.grads, p.grad_scale);
  }
}

}  // namespace

void softmax_cross_entropy(const XentProblem& p) {
  if (p.rows == 0) return;
  if (p.dtype == DType::bf16)
    run<bf16>(p);
  else
    run<float>(p);
}

}  // namespace llmcore::loss::LLMCORE_ISA_NS

#pragma GCC diagnostic pop
