// Reference dequantization of one block of each type into floats, in the namespace of the
// including variant. Every value is computed as gguf.quants computes it in float32 (same
// operations, same order, no fused multiply-add), so results are bit identical to it.
#pragma once

#include <cstdint>
#include <cstring>

#include "quant/blocks.hpp"
#include "quant/half.hpp"

namespace llmcore::quant::LLMCORE_ISA_NS {

// Blocks are copied out of the byte buffer: it may sit at any address (a memory map).
template <class Block>
inline Block load_block(const uint8_t* p) {
  Block b;
  std::memcpy(&b, p, sizeof b);
  return b;
}

// The 6-bit scale and min of sub-block j of a Q4_K/Q5_K block.
inline void unpack_scales_k4(const uint8_t* s, int j, int& sc, int& m) {
  if (j < 4) {
    sc = s[j] & 63;
    m = s[j + 4] & 63;
  } else {
    sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
    m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

// Each returns false when a block scale (fp16) is inf or NaN; `out` is written anyway.
inline bool dequant(const BlockQ8_0& b, float* out) {
  const float d = half_to_float(b.d);
  for (int j = 0; j < kQK; ++j) out[j] = static_cast<float>(b.qs[j]) * d;
  return !half_not_finite(b.d);
}

inline bool dequant(const BlockQ4_0& b, float* out) {
  const float d = half_to_float(b.d);
  for (int j = 0; j < kQK / 2; ++j) {
    out[j] = d * static_cast<float>((b.qs[j] & 0xF) - 8);
    out[j + kQK / 2] = d * static_cast<float>((b.qs[j] >> 4) - 8);
  }
  return !half_not_finite(b.d);
}

inline bool dequant(const BlockQ4_1& b, float* out) {
  const float d = half_to_float(b.d), m = half_to_float(b.m);
  for (int j = 0; j < kQK / 2; ++j) {
    out[j] = d * static_cast<float>(b.qs[j] & 0xF) + m;
    out[j + kQK / 2] = d * static_cast<float>(b.qs[j] >> 4) + m;
  }
  return !half_not_finite(b.d) && !half_not_finite(b.m);
}

inline uint32_t high_bits(const uint8_t* qh) {
  return static_cast<uint32_t>(qh[0]) | static_cast<uint32_t>(qh[1]) << 8 |
         static_cast<uint32_t>(qh[2]) << 16 | static_cast<uint32_t>(qh[3]) << 24;
}

inline bool dequant(const BlockQ5_0& b, float* out) {
  const float d = half_to_float(b.d);
  const uint32_t qh = high_bits(b.qh);
  for (int j = 0; j < kQK / 2; ++j) {
    const int lo = (b.qs[j] & 0xF) | static_cast<int>((qh >> j) & 1u) << 4;
    const int hi = (b.qs[j] >> 4) | static_cast<int>((qh >> (j + 16)) & 1u) << 4;
    out[j] = d * static_cast<float>(lo - 16);
    out[j + kQK / 2] = d * static_cast<float>(hi - 16);
  }
  return !half_not_finite(b.d);
}

inline bool dequant(const BlockQ5_1& b, float* out) {
  const float d = half_to_float(b.d), m = half_to_float(b.m);
  const uint32_t qh = high_bits(b.qh);
  for (int j = 0; j < kQK / 2; ++j) {
    const int lo = (b.qs[j] & 0xF) | static_cast<int>((qh >> j) & 1u) << 4;
    const int hi = (b.qs[j] >> 4) | static_cast<int>((qh >> (j + 16)) & 1u) << 4;
    out[j] = d * static_cast<float>(lo) + m;
    out[j + kQK / 2] = d * static_cast<float>(hi) + m;
  }
  return !half_not_finite(b.d) && !half_not_finite(b.m);
}

inline bool dequant(const BlockQ4_K& b, float* out) {
  const float d = half_to_float(b.d), dmin = half_to_float(b.dmin);
  for (int j = 0; j < 8; ++j) {
    int sc, m;
    unpack_scales_k4(b.scales, j, sc, m);
    const float d1 = d * static_cast<float>(sc), m1 = dmin * static_cast<float>(m);
    const uint8_t* q = b.qs + (j / 2) * 32;
    const int shift = (j % 2) * 4;
    for (int l = 0; l < 32; ++l) out[j * 32 + l] = d1 * static_cast<float>((q[l] >> shift) & 0xF) - m1;
  }
  return !half_not_finite(b.d) && !half_not_finite(b.dmin);
}

inline bool dequant(const BlockQ5_K& b, float* out) {
  const float d = half_to_float(b.d), dmin = half_to_float(b.dmin);
  for (int j = 0; j < 8; ++j) {
    int sc, m;
    unpack_scales_k4(b.scales, j, sc, m);
    const float d1 = d * static_cast<float>(sc), m1 = dmin * static_cast<float>(m);
    const uint8_t* q = b.qs + (j / 2) * 32;
    const int shift = (j % 2) * 4;
    for (int l = 0; l < 32; ++l) {
      const int v = ((q[l] >> shift) & 0xF) | ((b.qh[l] >> j) & 1) << 4;
      out[j * 32 + l] = d1 * static_cast<float>(v) - m1;
    }
  }
  return !half_not_finite(b.d) && !half_not_finite(b.dmin);
}

inline bool dequant(const BlockQ6_K& b, float* out) {
  const float d = half_to_float(b.d);
  // Element e = h * 128 + k * 32 + l (half h, quarter k, l < 32).
  for (int h = 0; h < 2; ++h)
    for (int k = 0; k < 4; ++k)
      for (int l = 0; l < 32; ++l) {
        const int e = h * 128 + k * 32 + l;
        const int lo = (b.ql[h * 64 + (k % 2) * 32 + l] >> (4 * (k / 2))) & 0xF;
        const int hi = (b.qh[h * 32 + l] >> (2 * k)) & 3;
        out[e] = d * static_cast<float>(b.scales[e / 16]) * static_cast<float>((lo | hi << 4) - 32);
      }
  return !half_not_finite(b.d);
}

// Dequantize `nblocks` consecutive blocks of type t into out; returns the index of the
// first block with a non-finite scale, or -1.
template <class Block>
inline int64_t dequant_blocks(const uint8_t* src, int64_t nblocks, int elems, float* out) {
  int64_t bad = -1;
  for (int64_t i = 0; i < nblocks; ++i) {
    const bool ok = dequant(load_block<Block>(src + i * static_cast<int64_t>(sizeof(Block))), out + i * elems);
    if (!ok && bad < 0) bad = i;
  }
  return bad;
}

inline int64_t dequant_row(QType t, const uint8_t* src, int64_t nblocks, float* out) {
  switch (t) {
    case QType::q8_0: return dequant_blocks<BlockQ8_0>(src, nblocks, kQK, out);
    case QType::q4_0: return dequant_blocks<BlockQ4_0>(src, nblocks, kQK, out);
    case QType::q4_1: return dequant_blocks<BlockQ4_1>(src, nblocks, kQK, out);
    case QType::q5_0: return dequant_blocks<BlockQ5_0>(src, nblocks, kQK, out);
    case QType::q5_1: return dequant_blocks<BlockQ5_1>(src, nblocks, kQK, out);
    case QType::q4_k: return dequant_blocks<BlockQ4_K>(src, nblocks, kQKK, out);
    case QType::q5_k: return dequant_blocks<BlockQ5_K>(src, nblocks, kQKK, out);
    case QType::q6_k: return dequant_blocks<BlockQ6_K>(src, nblocks, kQKK, out);
  }
  return -1;
}

}  // namespace llmcore::quant::LLMCORE_ISA_NS
