// The operands of the integer matmul (matmul_int.cpp), in the namespace of the including
// variant: activation rows quantized to 8 bits, and weight rows decoded from their blocks
// into one common form that every type shares.
//
// Both are laid out over `kp` = K rounded up to 64 (one AVX-512 vector of bytes); the
// padding holds zeros (quants, scales, offsets), so it adds nothing to any dot product.
//
// Activations: blocks of 32 values, x_k ~ xd_b * xq_k with xd_b = max_k |x_k| / 127 and
// xq_k = round(x_k / xd_b) in [-127, 127], so |x_k - xd_b xq_k| <= xd_b / 2 (up to the
// rounding of one division). Per half-block of 16, xc_h = xd_b * sum_k xq_k feeds the
// weight offsets. A NaN or inf in a block makes its xd_b NaN: outputs turn NaN, as the
// float product's would.
//
// Weights: w_k = s_h * q_k + o_h, q_k an unsigned byte and (s_h, o_h) float per half-block
// of 16 values. s_h is the reference's own float scale (d, or d * sc for the K-quants), o_h
// its offset (-8 d for Q4_0, m for Q4_1, -dmin * m_j for Q4_K, -32 d sc for Q6_K, ...).
// Q8_0 is the exception: q_k keeps the signed byte and o_h = -128 d is the offset that
// reading q_k as q_k + 128 (its sign bit flipped) needs; a kernel either multiplies signed
// bytes and ignores o_h, or flips the sign bit and adds the offsets.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "quant/dequant_block.hpp"

namespace llmcore::quant::LLMCORE_ISA_NS {

inline int64_t padded_k(int64_t K) { return (K + 63) / 64 * 64; }

// Row strides of the quantized activations (in elements of each array). xd has 4 floats
// of slack so a kernel may read a 128-bit vector of scales from any block of a row.
struct ActLayout {
  int64_t kp, xq_ld, xd_ld, xc_ld;
  explicit ActLayout(int64_t K) : kp(padded_k(K)), xq_ld(kp), xd_ld(kp / 32 + 4), xc_ld(kp / 16) {}
};

// One row of K floats into xq (kp bytes), xd (xd_ld floats), xc (xc_ld floats).
inline void quantize_act_row(const float* x, int64_t K, const ActLayout& lay, int8_t* xq, float* xd,
                             float* xc) {
  const int64_t nb = K / 32;
  for (int64_t b = 0; b < nb; ++b) {
    const float* v = x + b * 32;
    float amax = 0.0f;
    bool finite = true;
    for (int k = 0; k < 32; ++k) {
      finite = finite && std::isfinite(v[k]);
      amax = std::fmax(amax, std::fabs(v[k]));
    }
    const float d = finite ? amax / 127.0f : std::numeric_limits<float>::quiet_NaN();
    int8_t* q = xq + b * 32;
    int sum[2] = {0, 0};
    for (int k = 0; k < 32; ++k) {
      const float r = d > 0.0f ? std::nearbyint(v[k] / d) : 0.0f;
      const int qi = static_cast<int>(std::fmin(127.0f, std::fmax(-127.0f, r)));
      q[k] = static_cast<int8_t>(qi);
      sum[k / 16] += qi;
    }
    xd[b] = d;
    xc[2 * b] = d * static_cast<float>(sum[0]);
    xc[2 * b + 1] = d * static_cast<float>(sum[1]);
  }
  std::memset(xq + K, 0, static_cast<size_t>(lay.kp - K));
  for (int64_t b = nb; b < lay.xd_ld; ++b) xd[b] = 0.0f;
  for (int64_t h = 2 * nb; h < lay.xc_ld; ++h) xc[h] = 0.0f;
}

// One block of each type into (q, s, o) of its block_elems values (block_elems / 16 halves).
inline void decode_int(const BlockQ8_0& b, uint8_t* q, float* s, float* o) {
  std::memcpy(q, b.qs, kQK);
  const float d = half_to_float(b.d);
  s[0] = s[1] = d;
  o[0] = o[1] = -128.0f * d;
}

inline void split_nibbles(const uint8_t* qs, uint8_t* q) {
  for (int j = 0; j < 16; ++j) {
    q[j] = qs[j] & 0xF;
    q[j + 16] = static_cast<uint8_t>(qs[j] >> 4);
  }
}

inline void fifth_bits(const uint8_t* qh, uint8_t* q) {
  const uint32_t h = high_bits(qh);
  for (int j = 0; j < 32; ++j) q[j] = static_cast<uint8_t>(q[j] | ((h >> j) & 1u) << 4);
}

inline void decode_int(const BlockQ4_0& b, uint8_t* q, float* s, float* o) {
  split_nibbles(b.qs, q);
  const float d = half_to_float(b.d);
  s[0] = s[1] = d;
  o[0] = o[1] = -8.0f * d;
}

inline void decode_int(const BlockQ4_1& b, uint8_t* q, float* s, float* o) {
  split_nibbles(b.qs, q);
  s[0] = s[1] = half_to_float(b.d);
  o[0] = o[1] = half_to_float(b.m);
}

inline void decode_int(const BlockQ5_0& b, uint8_t* q, float* s, float* o) {
  split_nibbles(b.qs, q);
  fifth_bits(b.qh, q);
  const float d = half_to_float(b.d);
  s[0] = s[1] = d;
  o[0] = o[1] = -16.0f * d;
}

inline void decode_int(const BlockQ5_1& b, uint8_t* q, float* s, float* o) {
  split_nibbles(b.qs, q);
  fifth_bits(b.qh, q);
  s[0] = s[1] = half_to_float(b.d);
  o[0] = o[1] = half_to_float(b.m);
}

// Q4_K and Q5_K: sub-block j (32 values) scaled by d * sc_j, offset by -dmin * m_j.
inline void k4_factors(uint16_t dh, uint16_t dminh, const uint8_t* scales, float* s, float* o) {
  const float d = half_to_float(dh), dmin = half_to_float(dminh);
  for (int j = 0; j < 8; ++j) {
    int sc, m;
    unpack_scales_k4(scales, j, sc, m);
    s[2 * j] = s[2 * j + 1] = d * static_cast<float>(sc);
    o[2 * j] = o[2 * j + 1] = -(dmin * static_cast<float>(m));
  }
}

inline void decode_int(const BlockQ4_K& b, uint8_t* q, float* s, float* o) {
  for (int c = 0; c < 4; ++c)
    for (int l = 0; l < 32; ++l) {
      q[c * 64 + l] = b.qs[c * 32 + l] & 0xF;
      q[c * 64 + 32 + l] = static_cast<uint8_t>(b.qs[c * 32 + l] >> 4);
    }
  k4_factors(b.d, b.dmin, b.scales, s, o);
}

inline void decode_int(const BlockQ5_K& b, uint8_t* q, float* s, float* o) {
  for (int c = 0; c < 4; ++c)
    for (int l = 0; l < 32; ++l) {
      const uint8_t hi0 = static_cast<uint8_t>(((b.qh[l] >> (2 * c)) & 1) << 4);
      const uint8_t hi1 = static_cast<uint8_t>(((b.qh[l] >> (2 * c + 1)) & 1) << 4);
      q[c * 64 + l] = static_cast<uint8_t>((b.qs[c * 32 + l] & 0xF) | hi0);
      q[c * 64 + 32 + l] = static_cast<uint8_t>((b.qs[c * 32 + l] >> 4) | hi1);
    }
  k4_factors(b.d, b.dmin, b.scales, s, o);
}

inline void decode_int(const BlockQ6_K& b, uint8_t* q, float* s, float* o) {
  // Element e = h * 128 + k * 32 + l, as in dequant_block.hpp.
  for (int h = 0; h < 2; ++h)
    for (int k = 0; k < 4; ++k)
      for (int l = 0; l < 32; ++l) {
        const int lo = (b.ql[h * 64 + (k % 2) * 32 + l] >> (4 * (k / 2))) & 0xF;
        const int hi = (b.qh[h * 32 + l] >> (2 * k)) & 3;
        q[h * 128 + k * 32 + l] = static_cast<uint8_t>(lo | hi << 4);
      }
  const float d = half_to_float(b.d);
  for (int i = 0; i < 16; ++i) {
    s[i] = d * static_cast<float>(b.scales[i]);
    o[i] = -32.0f * s[i];
  }
}

template <class Block>
inline void decode_int_row(const uint8_t* src, int64_t nblocks, int elems, uint8_t* q, float* s,
                           float* o) {
  for (int64_t i = 0; i < nblocks; ++i)
    decode_int(load_block<Block>(src + i * static_cast<int64_t>(sizeof(Block))), q + i * elems,
               s + i * (elems / 16), o + i * (elems / 16));
}

// Row strides of a panel of decoded weight rows: kp quants, and kp / 16 scales and offsets
// with 4 floats of slack (a kernel may read a 128-bit vector of them anywhere in a row).
struct WeightLayout {
  int64_t kp, q_ld, s_ld;
  explicit WeightLayout(int64_t K) : kp(padded_k(K)), q_ld(kp), s_ld(kp / 16 + 4) {}
};

// One weight row of K values into q, s and o (strides of `lay`), zero padded.
inline void decode_weight_row(QType t, const uint8_t* src, int64_t K, const WeightLayout& lay,
                              uint8_t* q, float* s, float* o) {
  switch (t) {
    case QType::q8_0: decode_int_row<BlockQ8_0>(src, K / kQK, kQK, q, s, o); break;
    case QType::q4_0: decode_int_row<BlockQ4_0>(src, K / kQK, kQK, q, s, o); break;
    case QType::q4_1: decode_int_row<BlockQ4_1>(src, K / kQK, kQK, q, s, o); break;
    case QType::q5_0: decode_int_row<BlockQ5_0>(src, K / kQK, kQK, q, s, o); break;
    case QType::q5_1: decode_int_row<BlockQ5_1>(src, K / kQK, kQK, q, s, o); break;
    case QType::q4_k: decode_int_row<BlockQ4_K>(src, K / kQKK, kQKK, q, s, o); break;
    case QType::q5_k: decode_int_row<BlockQ5_K>(src, K / kQKK, kQKK, q, s, o); break;
    case QType::q6_k: decode_int_row<BlockQ6_K>(src, K / kQKK, kQKK, q, s, o); break;
  }
  std::memset(q + K, 0, static_cast<size_t>(lay.kp - K));
  for (int64_t h = K / 16; h < lay.s_ld; ++h) s[h] = o[h] = 0.0f;
}

// The operands of one register tile: MR activation rows times NR decoded weight rows,
// y[m * ldy + n] = dot(activation row m, weight row n).
struct TileArgs {
  const uint8_t* wq;
  const float *ws, *wo;
  const int8_t* xq;
  const float *xd, *xc;
  int64_t wq_ld, ws_ld, xq_ld, xd_ld, xc_ld, kp;
  float* y;
  int64_t ldy;
};
using TileFn = void (*)(const TileArgs&);

}  // namespace llmcore::quant::LLMCORE_ISA_NS
