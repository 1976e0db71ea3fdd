// Reference quantizers, compiled once at baseline without floating-point contraction.
//
// Q8_0, Q4_0, Q4_1, Q5_0 and Q5_1 perform gguf.quants' float32 operations in the same
// order, so their bytes are identical to it. Q4_K (which gguf.quants cannot quantize) is
// our own: per sub-block the offset is min(0, min x), the 6-bit scales are rounded up and
// the 6-bit mins rounded to nearest against fp16 super-block factors chosen so that no
// scale overflows, and each value takes the nearest of its sub-block's 16 levels. Every
// value is then within max(d * sc_j / 2, dmin / 2) of its dequantized value (d, dmin, sc_j
// as stored in the block).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

// Compiled once: its inline helpers get a namespace of their own (csrc/isa/isa.hpp).
#define LLMCORE_ISA_NS isa_reference
#include "quant/half.hpp"
#include "quant/quant.hpp"

namespace llmcore::quant {
namespace {

using isa_reference::float_to_half;
using isa_reference::half_not_finite;
using isa_reference::half_to_float;

// Quantized level as gguf.quants computes it: trunc(v), clipped to [0, top].
inline uint8_t level(float v, int top) {
  const float t = std::trunc(v);
  return static_cast<uint8_t>(std::min(top, static_cast<int>(t < 0.0f ? 0.0f : t)));
}

// The value of largest magnitude (the first one on ties), as Q4_0/Q5_0 scale by it.
inline float signed_absmax(const float* x, int n) {
  float amax = 0.0f, max = 0.0f;
  for (int j = 0; j < n; ++j)
    if (std::fabs(x[j]) > amax) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  return max;
}

bool q8_0(const float* x, uint8_t* out) {
  BlockQ8_0 b;
  float amax = 0.0f;
  for (int j = 0; j < kQK; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
  b.d = float_to_half(d);
  for (int j = 0; j < kQK; ++j) b.qs[j] = static_cast<int8_t>(std::round(x[j] * id));
  std::memcpy(out, &b, sizeof b);
  return !half_not_finite(b.d);
}

// Q4_0 and Q5_0: d = max / -(2^(bits-1)), q = trunc(x / d + 2^(bits-1) + 0.5).
void symmetric_levels(const float* x, int half_range, uint16_t& dh, uint8_t* q) {
  const float d = signed_absmax(x, kQK) / static_cast<float>(-half_range);
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  dh = float_to_half(d);
  for (int j = 0; j < kQK; ++j) q[j] = level(x[j] * id + (static_cast<float>(half_range) + 0.5f), 2 * half_range - 1);
}

// Q4_1 and Q5_1: d = (max - min) / top, q = trunc((x - min) / d + 0.5).
void affine_levels(const float* x, int top, uint16_t& dh, uint16_t& mh, uint8_t* q) {
  float mn = x[0], mx = x[0];
  for (int j = 1; j < kQK; ++j) {
    mn = std::min(mn, x[j]);
    mx = std::max(mx, x[j]);
  }
  const float d = (mx - mn) / static_cast<float>(top), id = d != 0.0f ? 1.0f / d : 0.0f;
  dh = float_to_half(d);
  mh = float_to_half(mn);
  for (int j = 0; j < kQK; ++j) q[j] = level((x[j] - mn) * id + 0.5f, top);
}

void pack_nibbles(const uint8_t* q, uint8_t* qs) {
  for (int j = 0; j < kQK / 2; ++j) qs[j] = static_cast<uint8_t>((q[j] & 0xF) | (q[j + kQK / 2] << 4));
}

void pack_high_bits(const uint8_t* q, uint8_t* qh) {
  uint32_t bits = 0;
  for (int j = 0; j < kQK; ++j) bits |= static_cast<uint32_t>((q[j] >> 4) & 1) << j;
  for (int i = 0; i < 4; ++i) qh[i] = static_cast<uint8_t>(bits >> (8 * i));
}

bool q4_0(const float* x, uint8_t* out) {
  BlockQ4_0 b;
  uint8_t q[kQK];
  symmetric_levels(x, 8, b.d, q);
  pack_nibbles(q, b.qs);
  std::memcpy(out, &b, sizeof b);
  return !half_not_finite(b.d);
}

bool q5_0(const float* x, uint8_t* out) {
  BlockQ5_0 b;
  uint8_t q[kQK];
  symmetric_levels(x, 16, b.d, q);
  pack_high_bits(q, b.qh);
  pack_nibbles(q, b.qs);
  std::memcpy(out, &b, sizeof b);
  return !half_not_finite(b.d);
}

bool q4_1(const float* x, uint8_t* out) {
  BlockQ4_1 b;
  uint8_t q[kQK];
  affine_levels(x, 15, b.d, b.m, q);
  pack_nibbles(q, b.qs);
  std::memcpy(out, &b, sizeof b);
  return !half_not_finite(b.d) && !half_not_finite(b.m);
}

bool q5_1(const float* x, uint8_t* out) {
  BlockQ5_1 b;
  uint8_t q[kQK];
  affine_levels(x, 31, b.d, b.m, q);
  pack_high_bits(q, b.qh);
  pack_nibbles(q, b.qs);
  std::memcpy(out, &b, sizeof b);
  return !half_not_finite(b.d) && !half_not_finite(b.m);
}

// The smallest fp16 h with h * 63 >= need (need >= 0, finite).
uint16_t half_factor(float need) {
  uint16_t h = float_to_half(need / 63.0f);
  while (!half_not_finite(h) && half_to_float(h) * 63.0f < need) ++h;
  return h;
}

bool q4_k(const float* x, uint8_t* out) {
  BlockQ4_K b;
  float scale[8], offset[8];
  float max_scale = 0.0f, max_offset = 0.0f;
  for (int j = 0; j < 8; ++j) {
    float mn = 0.0f, mx = x[j * 32];
    for (int l = 0; l < 32; ++l) {
      mn = std::min(mn, x[j * 32 + l]);
      mx = std::max(mx, x[j * 32 + l]);
    }
    scale[j] = (mx - mn) / 15.0f;
    offset[j] = -mn;
    max_scale = std::max(max_scale, scale[j]);
    max_offset = std::max(max_offset, offset[j]);
  }
  b.d = half_factor(max_scale);
  b.dmin = half_factor(max_offset);
  if (half_not_finite(b.d) || half_not_finite(b.dmin)) return false;
  const float d = half_to_float(b.d), dmin = half_to_float(b.dmin);
  int sc[8], mq[8];
  for (int j = 0; j < 8; ++j) {
    sc[j] = d > 0.0f ? std::min(63, static_cast<int>(std::ceil(scale[j] / d))) : 0;
    mq[j] = dmin > 0.0f ? std::min(63, static_cast<int>(std::round(offset[j] / dmin))) : 0;
  }
  for (int j = 0; j < 4; ++j) {
    b.scales[j] = static_cast<uint8_t>(sc[j] | ((sc[j + 4] >> 4) << 6));
    b.scales[j + 4] = static_cast<uint8_t>(mq[j] | ((mq[j + 4] >> 4) << 6));
    b.scales[j + 8] = static_cast<uint8_t>((sc[j + 4] & 0xF) | ((mq[j + 4] & 0xF) << 4));
  }
  std::memset(b.qs, 0, sizeof b.qs);
  for (int j = 0; j < 8; ++j) {
    // The levels are s * q - m, q in 0..15 (as dequantization computes them).
    const float s = d * static_cast<float>(sc[j]), m = dmin * static_cast<float>(mq[j]);
    for (int l = 0; l < 32; ++l) {
      const float v = s > 0.0f ? std::round((x[j * 32 + l] + m) / s) : 0.0f;
      const int q = static_cast<int>(std::clamp(v, 0.0f, 15.0f));
      b.qs[(j / 2) * 32 + l] |= static_cast<uint8_t>(q << ((j % 2) * 4));
    }
  }
  std::memcpy(out, &b, sizeof b);
  return true;
}

using BlockQuantizer = bool (*)(const float*, uint8_t*);

BlockQuantizer quantizer(QType t) {
  switch (t) {
    case QType::q8_0: return q8_0;
    case QType::q4_0: return q4_0;
    case QType::q4_1: return q4_1;
    case QType::q5_0: return q5_0;
    case QType::q5_1: return q5_1;
    case QType::q4_k: return q4_k;
    default: return nullptr;
  }
}

}  // namespace

void quantize(const TypeInfo& t, const float* src, int64_t rows, int64_t cols, uint8_t* dst,
              int64_t nbytes, int threads) {
  checked_bytes(t, rows, cols, nbytes);
  const BlockQuantizer fn = quantizer(t.type);
  if (fn == nullptr)
    throw std::invalid_argument(std::string("quantize: no quantizer for ") + t.name +
                                "; valid: q8_0, q4_0, q4_1, q5_0, q5_1, q4_k");
  const int64_t nb = cols / t.block_elems;
  int64_t bad_row = INT64_MAX;
  int code = 0;
  const int nthreads = rows * cols < (int64_t{1} << 16) ? 1 : std::max(1, threads);
  (void)nthreads;
#ifdef LLMCORE_OPENMP
#pragma omp parallel for num_threads(nthreads) schedule(static) reduction(min : bad_row) if (nthreads > 1)
#endif
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = src + r * cols;
    bool finite = true;
    for (int64_t c = 0; c < cols; ++c) finite = finite && std::isfinite(x[c]);
    if (!finite) {
      bad_row = std::min(bad_row, r);
      continue;
    }
    for (int64_t i = 0; i < nb; ++i)
      if (!fn(x + i * t.block_elems, dst + (r * nb + i) * t.block_bytes)) bad_row = std::min(bad_row, r);
  }
  if (bad_row == INT64_MAX) return;
  const float* x = src + bad_row * cols;
  for (int64_t c = 0; c < cols; ++c) code |= std::isfinite(x[c]) ? 0 : 1;
  throw std::domain_error(std::string("quantize ") + t.name + ": row " + std::to_string(bad_row) +
                          (code ? " holds NaN or inf" :
                                  " holds values too large for the type's fp16 block scale "
                                  "(|x| up to about 65504 times its largest level)"));
}

}  // namespace llmcore::quant
