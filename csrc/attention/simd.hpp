// Portable SIMD helpers and bfloat16 conversion for the CPU kernels (attention, loss,
// activation).
//
// GCC/Clang vector extensions instead of intrinsics: the same source compiles to AVX-512
// (zmm, 16 floats) when the compiler targets it, and to narrower registers elsewhere.
// Everything is inline, so vectors never cross a non-inlined call boundary.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#ifndef LLMCORE_ISA_NS
#error "compiled once per instruction-set variant: the build defines LLMCORE_ISA_NS (csrc/isa/isa.hpp)"
#endif

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"

// The inline helpers of one instruction-set variant (see csrc/isa/isa.hpp).
namespace llmcore::attn::LLMCORE_ISA_NS {

#if defined(__AVX512F__)
inline constexpr int kVecBytes = 64;
#else
inline constexpr int kVecBytes = 32;
#endif

template <class T>
struct Simd;

template <>
struct Simd<float> {
  static constexpr int L = kVecBytes / 4;
  typedef float V __attribute__((vector_size(kVecBytes)));
  typedef int32_t I __attribute__((vector_size(kVecBytes)));
};

template <>
struct Simd<double> {
  static constexpr int L = kVecBytes / 8;
  typedef double V __attribute__((vector_size(kVecBytes)));
  typedef int64_t I __attribute__((vector_size(kVecBytes)));
};

template <class T>
using Vec = typename Simd<T>::V;

// bfloat16 storage and scalar conversion to and from the accumulation type.
struct bf16 {
  uint16_t bits;
};

inline float to_acc(const bf16& x) {
  const uint32_t u = static_cast<uint32_t>(x.bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
inline float to_acc(const float& x) { return x; }
inline double to_acc(const double& x) { return x; }

template <class Out, class Acc>
inline Out from_acc(Acc x) {
  if constexpr (std::is_same_v<Out, bf16>) {
    // Round to nearest even; NaN stays a quiet NaN.
    uint32_t u;
    std::memcpy(&u, &x, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return bf16{static_cast<uint16_t>((u >> 16) | 0x40u)};
    u += 0x7fffu + ((u >> 16) & 1u);
    return bf16{static_cast<uint16_t>(u >> 16)};
  } else {
    return static_cast<Out>(x);
  }
}

template <class To, class From>
inline To bitcast(const From& f) {
  static_assert(sizeof(To) == sizeof(From), "bitcast between equal sizes");
  To t;
  std::memcpy(&t, &f, sizeof t);
  return t;
}

template <class T>
inline Vec<T> vload(const T* p) {
  Vec<T> v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <class T>
inline void vstore(T* p, Vec<T> v) {
  std::memcpy(p, &v, sizeof v);
}

// L bfloat16 values widened to float lanes (exact: bf16 is the top half of a float).
inline Vec<float> vload_bf16(const bf16* p) {
  typedef uint16_t H __attribute__((vector_size(kVecBytes / 2)));
  typedef uint32_t U __attribute__((vector_size(kVecBytes)));
  H h;
  std::memcpy(&h, p, sizeof h);
  const U w = __builtin_convertvector(h, U) << 16;
  return bitcast<Vec<float>>(w);
}

// Float lanes rounded to nearest even bfloat16 and stored; NaN stays a quiet NaN.
inline void vstore_bf16(bf16* p, Vec<float> v) {
  typedef uint16_t H __attribute__((vector_size(kVecBytes / 2)));
  typedef uint32_t U __attribute__((vector_size(kVecBytes)));
  const U u = bitcast<U>(v);
  const U nan = (u & 0x7fffffffu) > 0x7f800000u;  // all ones in NaN lanes
  const U rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const U quiet = (u >> 16) | 0x40u;
  const H h = __builtin_convertvector((rounded & ~nan) | (quiet & nan), H);
  std::memcpy(p, &h, sizeof h);
}

template <class T>
inline Vec<T> vset(T x) {
  return Vec<T>{} + x;
}

template <class T>
inline Vec<T> vmax(Vec<T> a, Vec<T> b) {
  return a > b ? a : b;
}

// Horizontal sums by halving in registers: log2(lanes) shuffles and adds. (Splitting
// through memcpy would bounce the vector through the stack and stall store forwarding.)
#if defined(__AVX512F__)
inline float hsum_impl(Vec<float> v) {
  typedef float F8 __attribute__((vector_size(32)));
  typedef float F4 __attribute__((vector_size(16)));
  const F8 s = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
               __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  const F4 t = __builtin_shufflevector(s, s, 0, 1, 2, 3) + __builtin_shufflevector(s, s, 4, 5, 6, 7);
  return (t[0] + t[2]) + (t[1] + t[3]);
}
inline double hsum_impl(Vec<double> v) {
  typedef double D4 __attribute__((vector_size(32)));
  typedef double D2 __attribute__((vector_size(16)));
  const D4 s = __builtin_shufflevector(v, v, 0, 1, 2, 3) + __builtin_shufflevector(v, v, 4, 5, 6, 7);
  const D2 t = __builtin_shufflevector(s, s, 0, 1) + __builtin_shufflevector(s, s, 2, 3);
  return t[0] + t[1];
}
#else
inline float hsum_impl(Vec<float> v) {
  typedef float F4 __attribute__((vector_size(16)));
  const F4 t = __builtin_shufflevector(v, v, 0, 1, 2, 3) + __builtin_shufflevector(v, v, 4, 5, 6, 7);
  return (t[0] + t[2]) + (t[1] + t[3]);
}
inline double hsum_impl(Vec<double> v) {
  typedef double D2 __attribute__((vector_size(16)));
  const D2 t = __builtin_shufflevector(v, v, 0, 1) + __builtin_shufflevector(v, v, 2, 3);
  return t[0] + t[1];
}
#endif

template <class T>
inline T hsum(Vec<T> v) {
  return hsum_impl(v);
}

// exp(x) for float lanes: Cody-Waite range reduction, degree-7 Taylor polynomial (about
// 1 ulp on the reduced range), 2^n built in the exponent bits. Lanes below -87 (including
// -inf, a masked score) give exactly 0.
inline Vec<float> vexp(Vec<float> x) {
  using V = Vec<float>;
  using I = Simd<float>::I;
  const V lo = vset(-87.0f), hi = vset(88.0f), magic = vset(12582912.0f);  // 1.5 * 2^23
  V xc = x < lo ? lo : x;
  xc = xc > hi ? hi : xc;
  const V t = xc * 1.44269504088896341f + magic;
  const V n = t - magic;
  V r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  V p = r * (1.0f / 5040.0f) + (1.0f / 720.0f);
  p = p * r + (1.0f / 120.0f);
  p = p * r + (1.0f / 24.0f);
  p = p * r + (1.0f / 6.0f);
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const I ni = bitcast<I>(t) - bitcast<I>(magic);
  const I bits = (ni + 127) << 23;
  const V res = p * bitcast<V>(bits);
  return x < lo ? V{} : res;
}

// exp(x) for double lanes: same scheme with a degree-13 polynomial (< 1e-16 relative on
// the reduced range), accurate enough for gradcheck in float64.
inline Vec<double> vexp(Vec<double> x) {
  using V = Vec<double>;
  using I = Simd<double>::I;
  const V lo = vset(-708.0), hi = vset(709.0), magic = vset(6755399441055744.0);  // 1.5 * 2^52
  V xc = x < lo ? lo : x;
  xc = xc > hi ? hi : xc;
  const V t = xc * 1.4426950408889634 + magic;
  const V n = t - magic;
  V r = xc - n * 0.6931471803691238;
  r = r - n * 1.9082149292705877e-10;
  static constexpr double c[14] = {1.0,
                                   1.0,
                                   1.0 / 2,
                                   1.0 / 6,
                                   1.0 / 24,
                                   1.0 / 120,
                                   1.0 / 720,
                                   1.0 / 5040,
                                   1.0 / 40320,
                                   1.0 / 362880,
                                   1.0 / 3628800,
                                   1.0 / 39916800,
                                   1.0 / 479001600,
                                   1.0 / 6227020800.0};
  V p = vset(c[13]);
  for (int i = 12; i >= 0; --i) p = p * r + c[i];
  const I ni = bitcast<I>(t) - bitcast<I>(magic);
  const I bits = (ni + 1023) << 52;
  const V res = p * bitcast<V>(bits);
  return x < lo ? V{} : res;
}

}  // namespace llmcore::attn::LLMCORE_ISA_NS

#pragma GCC diagnostic pop
