// IEEE half precision <-> float, bit exact (round to nearest even, subnormals, inf, NaN),
// in the namespace of the including variant (csrc/isa/isa.hpp).
#pragma once

#include <cstdint>
#include <cstring>
#if defined(__F16C__)
#include <immintrin.h>
#endif

#ifndef LLMCORE_ISA_NS
#error "half.hpp needs LLMCORE_ISA_NS (csrc/isa/isa.hpp)"
#endif

namespace llmcore::quant::LLMCORE_ISA_NS {

inline float half_to_float(uint16_t h) {
#if defined(__F16C__)
  // The hardware conversion (x86-64-v3 and up) is exact too; only a NaN's payload may
  // differ (quieted), and a NaN scale is an error anyway.
  return _cvtsh_ss(h);
#else
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  uint32_t bits;
  if (e == 0x1f) {
    bits = sign | 0x7f800000u | (m << 13);
  } else if (e != 0) {
    bits = sign | ((e + 112) << 23) | (m << 13);
  } else {
    const float f = static_cast<float>(m) * 5.9604644775390625e-8f;  // m * 2^-24, exact
    return sign ? -f : f;
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
#endif
}

// True when the half is inf or NaN (a corrupt block scale).
inline bool half_not_finite(uint16_t h) { return (h & 0x7c00u) == 0x7c00u; }

inline uint16_t float_to_half(float f) {
  uint32_t x;
  std::memcpy(&x, &f, sizeof x);
  const uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return static_cast<uint16_t>(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0u));
  if (ax >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // >= 65520 rounds to inf
  uint32_t q, rem, tie;
  if (ax < 0x38800000u) {  // below 2^-14: a subnormal half, in units of 2^-24
    if (ax < 0x33000000u) return static_cast<uint16_t>(sign);  // below 2^-25 rounds to 0
    const uint32_t shift = 126u - (ax >> 23), mant = (ax & 0x7fffffu) | 0x800000u;
    q = mant >> shift;
    rem = mant & ((1u << shift) - 1u);
    tie = 1u << (shift - 1u);
  } else {  // rebias the exponent (127 -> 15) and drop 13 mantissa bits; a carry is fine
    const uint32_t r = ax - 0x38000000u;
    q = r >> 13;
    rem = r & 0x1fffu;
    tie = 0x1000u;
  }
  if (rem > tie || (rem == tie && (q & 1u))) ++q;
  return static_cast<uint16_t>(sign | q);
}

}  // namespace llmcore::quant::LLMCORE_ISA_NS
