// The operands of the K-quant integer matmul for many rows (prefill): Q4_K, Q5_K and Q6_K
// weights times 8-bit activations in blocks of 256, one float scale per super-block on each
// side, so that the sub-block scales (6-bit for Q4_K/Q5_K, int8 for Q6_K) multiply
// integer sums and the products turn float once per 256 values (int_tile_k.hpp), not once
// per 16 as in the common operands (int_operands.hpp).
//
// Activations: per super-block of 256, xd = max |x_k| / 127 and xq_k = round(x_k / xd) in
// [-127, 127] (NaN xd for a non-finite value); per half-block h of 16, xc_h = xd * sum of
// its xq_k, for the weights' offsets.
//
// Weights: w_k = d * sc_h * q_k + o_h over the halves h of a super-block; q_k the unsigned
// quant (<= 15 Q4_K, <= 31 Q5_K, <= 63 Q6_K), sc_h an int16 (sc_j of the sub-block for
// Q4_K/Q5_K, the int8 scale for Q6_K), d the super-block's fp16 scale, o_h the float offset
// (-dmin * m_j, or -32 d sc_h for Q6_K), as in int_operands.hpp.
//
// Both sides keep each 64-value chunk's bytes in one order: byte 8 g + 2 h + e holds value
// 16 h + 2 g + e (h the half in the chunk, g < 8, e < 2). A dot product does not care
// about the order, and then the 16-bit lanes of a vector cycle through the chunk's four
// halves, so one broadcast 64-bit pattern of their four scales multiplies them all.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "quant/int_operands.hpp"

namespace llmcore::quant::LLMCORE_ISA_NS {

inline bool is_k_quant(QType t) { return t == QType::q4_k || t == QType::q5_k || t == QType::q6_k; }

// Row strides (elements) of both sides; K is a multiple of 256.
struct LayoutK {
  int64_t K, q_ld, sb_ld, h_ld;
  explicit LayoutK(int64_t k) : K(k), q_ld(k), sb_ld(k / kQKK), h_ld(k / 16) {}
};

typedef uint16_t U16x32 __attribute__((vector_size(64)));

// The chunk order above, 64 values (as 32 pairs of bytes) at a time.
inline void store_chunk_order(const uint8_t* natural, uint8_t* out) {
  const U16x32 v = load_bytes<U16x32>(natural);
  // pair 4 g + h of the output is pair 8 h + g of the input
  const U16x32 idx = {0, 8, 16, 24, 1, 9, 17, 25, 2, 10, 18, 26, 3, 11, 19, 27,
                      4, 12, 20, 28, 5, 13, 21, 29, 6, 14, 22, 30, 7, 15, 23, 31};
  store_bytes(out, U16x32(__builtin_shuffle(v, idx)));
}

// One row of K floats into xq (K bytes, chunk order), xd (K / 256), xc (K / 16).
inline void quantize_act_row_k(const float* x, const LayoutK& lay, int8_t* xq, float* xd, float* xc) {
  alignas(64) int8_t q[kQKK];
  for (int64_t b = 0; b < lay.sb_ld; ++b) {
    int32_t sums[kQKK / 16];
    const float d = quantize_act_block<kQKK>(x + b * kQKK, q, sums);
    for (int h = 0; h < kQKK / 16; ++h) xc[b * (kQKK / 16) + h] = d * static_cast<float>(sums[h]);
    xd[b] = d;
    for (int c = 0; c < kQKK / 64; ++c)
      store_chunk_order(reinterpret_cast<const uint8_t*>(q) + 64 * c,
                        reinterpret_cast<uint8_t*>(xq) + b * kQKK + 64 * c);
  }
}

// One super-block of each type into q (256 bytes, chunk order), sc (16), d (1), o (16).
inline void decode_k4_scales(const uint8_t* scales, float dmin, int16_t* sc, float* o) {
  for (int j = 0; j < 8; ++j) {
    int s, m;
    unpack_scales_k4(scales, j, s, m);
    sc[2 * j] = sc[2 * j + 1] = static_cast<int16_t>(s);
    o[2 * j] = o[2 * j + 1] = -(dmin * static_cast<float>(m));
  }
}

inline void decode_k(QType t, const uint8_t* b, uint8_t* q, int16_t* sc, float* d, float* o) {
  alignas(64) uint8_t natural[kQKK];
  float s[16], unused[16];
  if (t == QType::q6_k) {
    decode_q6_k(b, natural, s, unused);
    *d = half_at(b + offsetof(BlockQ6_K, d));
    for (int i = 0; i < 16; ++i) {
      sc[i] = static_cast<int8_t>(b[offsetof(BlockQ6_K, scales) + i]);
      o[i] = -32.0f * s[i];  // the common decoding's offset, d * sc rounded to float first
    }
  } else {
    if (t == QType::q4_k) decode_q4_k(b, natural, s, unused);
    else decode_q5_k(b, natural, s, unused);
    *d = half_at(b);
    decode_k4_scales(b + offsetof(BlockQ4_K, scales), half_at(b + 2), sc, o);
  }
  for (int c = 0; c < kQKK / 64; ++c) store_chunk_order(natural + 64 * c, q + 64 * c);
}

// One weight row of K values (K / 256 blocks of type t) into q, sc, d, o (strides of lay).
inline void decode_weight_row_k(QType t, const uint8_t* src, const LayoutK& lay, uint8_t* q,
                                int16_t* sc, float* d, float* o) {
  const int64_t bytes = t == QType::q6_k   ? sizeof(BlockQ6_K)
                        : t == QType::q5_k ? sizeof(BlockQ5_K)
                                           : sizeof(BlockQ4_K);
  for (int64_t b = 0; b < lay.sb_ld; ++b)
    decode_k(t, src + b * bytes, q + b * kQKK, sc + b * 16, d + b, o + b * 16);
}

// The operands of one register tile: MR activation rows times NR decoded weight rows.
struct TileKArgs {
  const uint8_t* wq;
  const int16_t* wsc;
  const float *wd, *wo;
  const int8_t* xq;
  const float *xd, *xc;
  int64_t q_ld, sb_ld, h_ld;  // the same on both sides
  float* y;
  int64_t ldy;
};
using TileKFn = void (*)(const TileKArgs&);

}  // namespace llmcore::quant::LLMCORE_ISA_NS
