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
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>

#include "quant/act_quant.hpp"
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
    int32_t sum[2];
    const float d = quantize_act_block<32>(x + b * 32, xq + b * 32, sum);
    xd[b] = d;
    xc[2 * b] = d * static_cast<float>(sum[0]);
    xc[2 * b + 1] = d * static_cast<float>(sum[1]);
  }
  std::memset(xq + K, 0, static_cast<size_t>(lay.kp - K));
  for (int64_t b = nb; b < lay.xd_ld; ++b) xd[b] = 0.0f;
  for (int64_t h = 2 * nb; h < lay.xc_ld; ++h) xc[h] = 0.0f;
}

// One block of each type, at `b` in the byte buffer, into (q, s, o) of its block_elems
// values (block_elems / 16 halves). The quants go through byte vectors loaded straight
// from the buffer: GCC converts a block copied into a struct one byte at a time.
typedef uint8_t U8x16 __attribute__((vector_size(16)));
typedef uint8_t U8x32 __attribute__((vector_size(32)));
typedef uint32_t U32x16 __attribute__((vector_size(64)));

template <class V>
inline V load_bytes(const uint8_t* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <class V>
inline void store_bytes(uint8_t* p, const V& v) {
  std::memcpy(p, &v, sizeof v);
}

inline float half_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, sizeof h);
  return half_to_float(h);
}

inline void legacy_factors(float d, float off, float* s, float* o) {
  s[0] = s[1] = d;
  o[0] = o[1] = off;
}

// Nibbles of 16 bytes: element j in the low nibble of byte j, j + 16 in its high one.
inline void split_nibbles(const uint8_t* qs, uint8_t* q) {
  const U8x16 v = load_bytes<U8x16>(qs);
  store_bytes(q, U8x16(v & 0xF));
  store_bytes(q + 16, U8x16(v >> 4));
}

// Bit j of the little-endian uint32 at qh is the fifth bit (16) of element j.
inline void fifth_bits(const uint8_t* qh, uint8_t* q) {
  uint32_t h;
  std::memcpy(&h, qh, sizeof h);
  const U32x16 lanes = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
  const U32x16 lo = ((h >> lanes) & 1u) << 4, hi = ((h >> (lanes + 16u)) & 1u) << 4;
  store_bytes(q, U8x16(load_bytes<U8x16>(q) | __builtin_convertvector(lo, U8x16)));
  store_bytes(q + 16, U8x16(load_bytes<U8x16>(q + 16) | __builtin_convertvector(hi, U8x16)));
}

inline void decode_q8_0(const uint8_t* b, uint8_t* q, float* s, float* o) {
  store_bytes(q, load_bytes<U8x32>(b + offsetof(BlockQ8_0, qs)));
  const float d = half_at(b);
  legacy_factors(d, -128.0f * d, s, o);
}

inline void decode_q4_0(const uint8_t* b, uint8_t* q, float* s, float* o) {
  split_nibbles(b + offsetof(BlockQ4_0, qs), q);
  const float d = half_at(b);
  legacy_factors(d, -8.0f * d, s, o);
}

inline void decode_q4_1(const uint8_t* b, uint8_t* q, float* s, float* o) {
  split_nibbles(b + offsetof(BlockQ4_1, qs), q);
  legacy_factors(half_at(b), half_at(b + offsetof(BlockQ4_1, m)), s, o);
}

inline void decode_q5_0(const uint8_t* b, uint8_t* q, float* s, float* o) {
  split_nibbles(b + offsetof(BlockQ5_0, qs), q);
  fifth_bits(b + offsetof(BlockQ5_0, qh), q);
  const float d = half_at(b);
  legacy_factors(d, -16.0f * d, s, o);
}

inline void decode_q5_1(const uint8_t* b, uint8_t* q, float* s, float* o) {
  split_nibbles(b + offsetof(BlockQ5_1, qs), q);
  fifth_bits(b + offsetof(BlockQ5_1, qh), q);
  legacy_factors(half_at(b), half_at(b + offsetof(BlockQ5_1, m)), s, o);
}

// Q4_K and Q5_K: sub-block j (32 values) scaled by d * sc_j, offset by -dmin * m_j.
inline void k4_factors(const uint8_t* b, const uint8_t* scales, float* s, float* o) {
  const float d = half_at(b), dmin = half_at(b + 2);
  for (int j = 0; j < 8; ++j) {
    int sc, m;
    unpack_scales_k4(scales, j, sc, m);
    s[2 * j] = s[2 * j + 1] = d * static_cast<float>(sc);
    o[2 * j] = o[2 * j + 1] = -(dmin * static_cast<float>(m));
  }
}

// Byte l of chunk c (32 bytes) holds sub-block 2c in its low nibble, 2c + 1 in its high.
inline void decode_q4_k(const uint8_t* b, uint8_t* q, float* s, float* o) {
  for (int c = 0; c < 4; ++c) {
    const U8x32 v = load_bytes<U8x32>(b + offsetof(BlockQ4_K, qs) + 32 * c);
    store_bytes(q + 64 * c, U8x32(v & 0xF));
    store_bytes(q + 64 * c + 32, U8x32(v >> 4));
  }
  k4_factors(b, b + offsetof(BlockQ4_K, scales), s, o);
}

// Plus bit j of qh[l] as the fifth bit of element l of sub-block j.
inline void decode_q5_k(const uint8_t* b, uint8_t* q, float* s, float* o) {
  const U8x32 qh = load_bytes<U8x32>(b + offsetof(BlockQ5_K, qh));
  for (int c = 0; c < 4; ++c) {
    const U8x32 v = load_bytes<U8x32>(b + offsetof(BlockQ5_K, qs) + 32 * c);
    const U8x32 h0 = ((qh >> (2 * c)) & 1) << 4, h1 = ((qh >> (2 * c + 1)) & 1) << 4;
    store_bytes(q + 64 * c, U8x32((v & 0xF) | h0));
    store_bytes(q + 64 * c + 32, U8x32((v >> 4) | h1));
  }
  k4_factors(b, b + offsetof(BlockQ5_K, scales), s, o);
}

// Element h * 128 + k * 32 + l: low 4 bits from ql[h * 64 + (k % 2) * 32 + l] (nibble
// k / 2), high 2 from qh[h * 32 + l] (bits 2k, 2k + 1), as in dequant_block.hpp.
inline void decode_q6_k(const uint8_t* b, uint8_t* q, float* s, float* o) {
  for (int h = 0; h < 2; ++h) {
    const U8x32 qh = load_bytes<U8x32>(b + offsetof(BlockQ6_K, qh) + 32 * h);
    for (int k = 0; k < 4; ++k) {
      const U8x32 ql = load_bytes<U8x32>(b + offsetof(BlockQ6_K, ql) + 64 * h + 32 * (k % 2));
      const U8x32 lo = k < 2 ? U8x32(ql & 0xF) : U8x32(ql >> 4);
      store_bytes(q + 128 * h + 32 * k, U8x32(lo | (((qh >> (2 * k)) & 3) << 4)));
    }
  }
  const float d = half_at(b + offsetof(BlockQ6_K, d));
  for (int i = 0; i < 16; ++i) {
    const auto sc = static_cast<int8_t>(b[offsetof(BlockQ6_K, scales) + i]);
    s[i] = d * static_cast<float>(sc);
    o[i] = -32.0f * s[i];
  }
}

using DecodeFn = void (*)(const uint8_t*, uint8_t*, float*, float*);

template <DecodeFn decode>
inline void decode_int_row(const uint8_t* src, int64_t nblocks, int elems, int bytes, uint8_t* q,
                           float* s, float* o) {
  for (int64_t i = 0; i < nblocks; ++i) decode(src + i * bytes, q + i * elems, s + i * (elems / 16), o + i * (elems / 16));
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
  const int64_t nl = K / kQK, nk = K / kQKK;
  switch (t) {
    case QType::q8_0: decode_int_row<decode_q8_0>(src, nl, kQK, sizeof(BlockQ8_0), q, s, o); break;
    case QType::q4_0: decode_int_row<decode_q4_0>(src, nl, kQK, sizeof(BlockQ4_0), q, s, o); break;
    case QType::q4_1: decode_int_row<decode_q4_1>(src, nl, kQK, sizeof(BlockQ4_1), q, s, o); break;
    case QType::q5_0: decode_int_row<decode_q5_0>(src, nl, kQK, sizeof(BlockQ5_0), q, s, o); break;
    case QType::q5_1: decode_int_row<decode_q5_1>(src, nl, kQK, sizeof(BlockQ5_1), q, s, o); break;
    case QType::q4_k: decode_int_row<decode_q4_k>(src, nk, kQKK, sizeof(BlockQ4_K), q, s, o); break;
    case QType::q5_k: decode_int_row<decode_q5_k>(src, nk, kQKK, sizeof(BlockQ5_K), q, s, o); break;
    case QType::q6_k: decode_int_row<decode_q6_k>(src, nk, kQKK, sizeof(BlockQ6_K), q, s, o); break;
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

// The operands of a fused tile (int_tile.hpp): weight rows read straight from their blocks.
struct FusedArgs {
  const uint8_t* w;  // first of the tile's weight rows
  int64_t row_bytes, nb;
  const int8_t* xq;
  const float* xd;
  const int32_t* xoff;
  const float* xc;  // the half-block sums, for offsets that are not integers (K-quants)
  int64_t xq_ld, xd_ld, xoff_ld, xc_ld;
  float* y;
  int64_t ldy;
};
using FusedFn = void (*)(const FusedArgs&);

}  // namespace llmcore::quant::LLMCORE_ISA_NS
