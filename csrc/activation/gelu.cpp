#include "activation/gelu.hpp"

#include <cmath>
#include <cstring>
#include <stdexcept>

#include "attention/simd.hpp"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"

namespace llmcore::activation::LLMCORE_ISA_NS {
// The SIMD helpers of this instruction-set variant.
namespace attn = ::llmcore::attn::LLMCORE_ISA_NS;

namespace {

using attn::bf16;
using F = attn::Vec<float>;
constexpr int L = attn::Simd<float>::L;

constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kCubic = 0.044715f;

inline F load(const float* p) { return attn::vload(p); }
inline F load(const bf16* p) { return attn::vload_bf16(p); }
inline void store(float* p, F v) { attn::vstore(p, v); }
inline void store(bf16* p, F v) { attn::vstore_bf16(p, v); }

// exp(-2u) with true overflow to +inf (vexp saturates at exp(88)), so that gelu(-inf) is
// NaN and gelu(-20) is -0, as in torch.
inline F exp_minus_2u(F x, F& u) {
  u = attn::vset(kSqrt2OverPi) * (x + attn::vset(kCubic) * x * x * x);
  const F a = attn::vset(-2.0f) * u;
  const F e = attn::vexp(a);
  return a > attn::vset(88.0f) ? attn::vset(INFINITY) : e;
}

template <class T>
inline F forward_vec(F x) {
  F u;
  const F s = attn::vset(1.0f) / (attn::vset(1.0f) + exp_minus_2u(x, u));  // sigmoid(2u)
  return x * s;
}

template <class T>
inline F backward_vec(F dy, F x) {
  F u;
  const F one = attn::vset(1.0f);
  const F e = exp_minus_2u(x, u);
  const F s = one / (one + e);
  // d/dx [x s(2u)] = s + x s (1 - s) 2 u'(x),  u' = sqrt(2/pi) (1 + 3 * 0.044715 x^2),
  // with 1 - s = e s: no cancellation where s is close to 1. Where e is inf, s is 0 and
  // so is the second term (not inf * 0).
  const F du = attn::vset(2.0f * kSqrt2OverPi) * (one + attn::vset(3.0f * kCubic) * x * x);
  const F es = e == attn::vset(INFINITY) ? F{} : e * s;
  return dy * (s + x * s * es * du);
}

// Elementwise over [0, n): whole vectors, then the tail through a zero-padded vector.
template <class T, class Op>
void for_each_block(int64_t n, int threads, Op op) {
  const int64_t nv = n / L;
  // Below ~64k elements a thread team costs more than it saves.
  const int nthreads = n < (int64_t{1} << 16) ? 1 : threads;
#ifdef LLMCORE_OPENMP
#pragma omp parallel for num_threads(nthreads) schedule(static) if (nthreads > 1)
#endif
  for (int64_t i = 0; i < nv; ++i) op(i * L, L);
  (void)nthreads;
  if (nv * L < n) op(nv * L, n - nv * L);
}

template <class T>
void forward(int64_t n, const T* x, T* y, int threads) {
  for_each_block<T>(n, threads, [&](int64_t i, int64_t len) {
    if (len == L) {
      store(y + i, forward_vec<T>(load(x + i)));
      return;
    }
    alignas(64) T xs[L] = {}, ys[L];
    std::memcpy(static_cast<void*>(xs), x + i, sizeof(T) * static_cast<size_t>(len));
    store(ys, forward_vec<T>(load(xs)));
    std::memcpy(static_cast<void*>(y + i), ys, sizeof(T) * static_cast<size_t>(len));
  });
}

template <class T>
void backward(int64_t n, const T* dy, const T* x, T* dx, int threads) {
  for_each_block<T>(n, threads, [&](int64_t i, int64_t len) {
    if (len == L) {
      store(dx + i, backward_vec<T>(load(dy + i), load(x + i)));
      return;
    }
    alignas(64) T gs[L] = {}, xs[L] = {}, out[L];
    std::memcpy(static_cast<void*>(gs), dy + i, sizeof(T) * static_cast<size_t>(len));
    std::memcpy(static_cast<void*>(xs), x + i, sizeof(T) * static_cast<size_t>(len));
    store(out, backward_vec<T>(load(gs), load(xs)));
    std::memcpy(static_cast<void*>(dx + i), out, sizeof(T) * static_cast<size_t>(len));
  });
}

void check(DType dtype, int64_t n) {
  if (dtype != DType::f32 && dtype != DType::bf16)
    throw std::invalid_argument("gelu: dtype code must be 0 (float32) or 1 (bfloat16)");
  if (n < 0) throw std::invalid_argument("gelu: negative element count");
}

}  // namespace

void gelu_tanh_forward(DType dtype, int64_t n, const void* x, void* y, int threads) {
  check(dtype, n);
  if (n == 0) return;
  if (dtype == DType::bf16)
    forward(n, static_cast<const bf16*>(x), static_cast<bf16*>(y), threads);
  else
    forward(n, static_cast<const float*>(x), static_cast<float*>(y), threads);
}

void gelu_tanh_backward(DType dtype, int64_t n, const void* dy, const void* x, void* dx,
                        int threads) {
  check(dtype, n);
  if (n == 0) return;
  if (dtype == DType::bf16)
    backward(n, static_cast<const bf16*>(dy), static_cast<const bf16*>(x), static_cast<bf16*>(dx),
             threads);
  else
    backward(n, static_cast<const float*>(dy), static_cast<const float*>(x),
             static_cast<float*>(dx), threads);
}

}  // namespace llmcore::activation::LLMCORE_ISA_NS

#pragma GCC diagnostic pop
