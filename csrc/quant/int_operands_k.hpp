// The operands of the K-quant integer matmul for many rows (prefill): Q4_K, Q5_K and Q6_K
// weights times 8-bit activations in blocks of 256, laid out so that each 32-bit lane of
// a vector gathers the values of one sub-block (one weight scale) and its integer sum
// needs one float multiply-add per sub-block (int_tile_k.hpp), not one integer scale
// multiply per 64 values as a chunk of mixed sub-blocks would.
//
// Activations: per super-block of 256, xd = max |x_k| / 127 and xq_k = round(x_k / xd) in
// [-127, 127] (NaN xd for a non-finite value).
//
// Weights: w_k = s_j * q_k + o_j over the sub-blocks j, q_k the unsigned quant (<= 15
// Q4_K, <= 31 Q5_K, <= 63 Q6_K), s_j and o_j the common decoding's float scale and offset
// (int_operands.hpp: d * sc_j and -dmin * m_j, or d * sc_j and -32 d sc_j for Q6_K).
//
// Groups: a lane spans S values (the sub-block: 32 for Q4_K/Q5_K, 16 for Q6_K) and a group
// G = kLanesK * S values, one row of 4 kLanesK bytes per 4 values of each lane: byte
// 4 kLanesK i + 4 L + e of a group holds its value S L + 4 i + e (lane L, e < 4, i < S / 4),
// on both sides. Per group and lane: the weight's s_j (ws) and o_j (wo); the activations'
// xd (xs) and xd * sum of the lane's xq (xc). Rows are padded to whole groups with zeros on
// both sides, which add nothing.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "quant/int_operands.hpp"

namespace llmcore::quant::LLMCORE_ISA_NS {

inline bool is_k_quant(QType t) { return t == QType::q4_k || t == QType::q5_k || t == QType::q6_k; }

// Lanes per group: one AVX-512 vector of int32 (AVX2 takes a group row as two halves), so
// a group is G = 512 values for Q4_K/Q5_K and 256 for Q6_K, whole super-blocks either way.
constexpr int kLanesK = 16;

// Values per lane: one sub-block of the type.
inline int lane_span(QType t) { return t == QType::q6_k ? 16 : 32; }

// Row strides of both sides: q_ld bytes of quants, f_ld floats per per-lane factor.
struct LayoutK {
  int64_t K, S, G, groups, q_ld, f_ld;
  LayoutK(int64_t k, int64_t s)
      : K(k), S(s), G(kLanesK * s), groups((k + G - 1) / G), q_ld(groups * G), f_ld(groups * kLanesK) {}
};

// One group of G natural-order bytes into the group order above (a transpose of 32-bit
// words: kLanesK rows of S / 4 words into S / 4 rows of kLanesK).
inline void to_group_order(const uint8_t* natural, int64_t S, uint8_t* out) {
  const int64_t words = S / 4;
  for (int lane = 0; lane < kLanesK; ++lane)
    for (int64_t i = 0; i < words; ++i)
      std::memcpy(out + 4 * (kLanesK * i + lane), natural + S * lane + 4 * i, 4);
}

// One row of K floats into xq (q_ld bytes), xs and xc (f_ld floats each).
inline void quantize_act_row_k(const float* x, const LayoutK& lay, int8_t* xq, float* xs, float* xc) {
  alignas(64) int8_t natural[kLanesK * 32];
  const int64_t per_sb = kQKK / lay.S;  // lanes per super-block
  for (int64_t g = 0; g < lay.groups; ++g) {
    std::memset(natural, 0, sizeof natural);
    float* s = xs + g * kLanesK;
    float* c = xc + g * kLanesK;
    for (int lane = 0; lane < kLanesK; ++lane) s[lane] = c[lane] = 0.0f;
    for (int64_t b = 0; b * kQKK < lay.G && g * lay.G + b * kQKK < lay.K; ++b) {
      int32_t sums[kQKK / 16];
      const float d = quantize_act_block<kQKK>(x + g * lay.G + b * kQKK, natural + b * kQKK, sums);
      for (int64_t l = 0; l < per_sb; ++l) {
        int32_t sum = 0;
        for (int64_t h = 0; h < lay.S / 16; ++h) sum += sums[l * (lay.S / 16) + h];
        s[b * per_sb + l] = d;
        c[b * per_sb + l] = d * static_cast<float>(sum);
      }
    }
    to_group_order(reinterpret_cast<const uint8_t*>(natural), lay.S,
                   reinterpret_cast<uint8_t*>(xq) + g * lay.G);
  }
}

// One weight row of K values (K / 256 blocks of type t) into q, ws, wo (strides of lay).
inline void decode_weight_row_k(QType t, const uint8_t* src, const LayoutK& lay, uint8_t* q, float* ws,
                                float* wo) {
  const int64_t bytes = t == QType::q6_k   ? sizeof(BlockQ6_K)
                        : t == QType::q5_k ? sizeof(BlockQ5_K)
                                           : sizeof(BlockQ4_K);
  const DecodeFn decode = t == QType::q6_k ? &decode_q6_k : t == QType::q5_k ? &decode_q5_k : &decode_q4_k;
  alignas(64) uint8_t natural[kLanesK * 32];
  const int64_t per_sb = kQKK / lay.S, nsb = lay.K / kQKK;
  for (int64_t g = 0; g < lay.groups; ++g) {
    std::memset(natural, 0, sizeof natural);
    float* s = ws + g * kLanesK;
    float* o = wo + g * kLanesK;
    for (int lane = 0; lane < kLanesK; ++lane) s[lane] = o[lane] = 0.0f;
    for (int64_t b = 0; b * kQKK < lay.G && g * (lay.G / kQKK) + b < nsb; ++b) {
      float hs[16], ho[16];  // per half of 16 values
      decode(src + (g * (lay.G / kQKK) + b) * bytes, natural + b * kQKK, hs, ho);
      for (int64_t l = 0; l < per_sb; ++l) {
        s[b * per_sb + l] = hs[l * (lay.S / 16)];
        o[b * per_sb + l] = ho[l * (lay.S / 16)];
      }
    }
    to_group_order(natural, lay.S, q + g * lay.G);
  }
}

// The operands of one register tile: MR activation rows times NR decoded weight rows.
struct TileKArgs {
  const uint8_t* wq;
  const float *ws, *wo;
  const int8_t* xq;
  const float *xs, *xc;
  int64_t q_ld, f_ld, groups;  // the same on both sides
  float* y;
  int64_t ldy;
};
using TileKFn = void (*)(const TileKArgs&);

}  // namespace llmcore::quant::LLMCORE_ISA_NS
