// GGUF's quantized block layouts, one struct per type, byte for byte as ggml stores them
// (little-endian; fp16 fields kept as their raw bits). A row of a quantized tensor is a
// run of whole blocks; a tensor is rows * (cols / elements_per_block) blocks.
#pragma once

#include <cstdint>

namespace llmcore::quant {

// GGML's type ids (gguf's GGMLQuantizationType), so a GGUF tensor's type field is usable
// as is.
enum class QType : int { q4_0 = 2, q4_1 = 3, q5_0 = 6, q5_1 = 7, q8_0 = 8, q4_k = 12, q5_k = 13, q6_k = 14 };

constexpr int kQK = 32;    // elements of a Q4_0..Q8_0 block
constexpr int kQKK = 256;  // elements of a K-quant super-block

// d * q, q in [-128, 127].
struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[kQK];
};
// d * (q - 8); element j in the low nibble of qs[j], element j + 16 in its high nibble.
struct BlockQ4_0 {
  uint16_t d;
  uint8_t qs[kQK / 2];
};
// d * q + m, nibbles as in Q4_0.
struct BlockQ4_1 {
  uint16_t d, m;
  uint8_t qs[kQK / 2];
};
// d * (q - 16); the fifth bit of element j is bit j of qh (a little-endian uint32).
struct BlockQ5_0 {
  uint16_t d;
  uint8_t qh[4];
  uint8_t qs[kQK / 2];
};
// d * q + m, bits as in Q5_0.
struct BlockQ5_1 {
  uint16_t d, m;
  uint8_t qh[4];
  uint8_t qs[kQK / 2];
};
// 8 sub-blocks of 32: d * sc[j] * q - dmin * m[j], with 6-bit sc and m packed in scales
// (see unpack_scales_k4); qs[c * 32 + l] holds sub-block 2c (low nibble) and 2c + 1 (high).
struct BlockQ4_K {
  uint16_t d, dmin;
  uint8_t scales[12];
  uint8_t qs[kQKK / 2];
};
// Q4_K plus a fifth bit: bit j of qh[l] for element l of sub-block j.
struct BlockQ5_K {
  uint16_t d, dmin;
  uint8_t scales[12];
  uint8_t qh[kQKK / 8];
  uint8_t qs[kQKK / 2];
};
// 16 sub-blocks of 16: d * scales[e / 16] * (q - 32), q's low 4 bits in ql, high 2 in qh.
struct BlockQ6_K {
  uint8_t ql[kQKK / 2];
  uint8_t qh[kQKK / 4];
  int8_t scales[kQKK / 16];
  uint16_t d;
};

static_assert(sizeof(BlockQ8_0) == 34 && sizeof(BlockQ4_0) == 18 && sizeof(BlockQ4_1) == 20 &&
                  sizeof(BlockQ5_0) == 22 && sizeof(BlockQ5_1) == 24 && sizeof(BlockQ4_K) == 144 &&
                  sizeof(BlockQ5_K) == 176 && sizeof(BlockQ6_K) == 210,
              "block structs must match GGUF's byte layout");

// The one table of quantized types.
struct TypeInfo {
  QType type;
  const char* name;
  int block_elems;
  int block_bytes;
};

constexpr TypeInfo kTypes[] = {
    {QType::q4_0, "q4_0", kQK, sizeof(BlockQ4_0)},   {QType::q4_1, "q4_1", kQK, sizeof(BlockQ4_1)},
    {QType::q5_0, "q5_0", kQK, sizeof(BlockQ5_0)},   {QType::q5_1, "q5_1", kQK, sizeof(BlockQ5_1)},
    {QType::q8_0, "q8_0", kQK, sizeof(BlockQ8_0)},   {QType::q4_k, "q4_k", kQKK, sizeof(BlockQ4_K)},
    {QType::q5_k, "q5_k", kQKK, sizeof(BlockQ5_K)}, {QType::q6_k, "q6_k", kQKK, sizeof(BlockQ6_K)},
};

}  // namespace llmcore::quant
