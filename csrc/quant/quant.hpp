// Quantized tensors in GGUF's block formats: dequantize, quantize, and y = x W^T with W
// quantized. Pure C++ over raw buffers; a tensor of `rows` x `cols` values is stored as
// rows * cols / block_elems blocks, row after row.
#pragma once

#include <cstdint>

#include "isa/isa.hpp"
#include "quant/blocks.hpp"

namespace llmcore::quant {

// The table entry of a GGML type id; std::invalid_argument naming the valid types.
const TypeInfo& type_info(int ggml_type);

// Bytes of a rows x cols tensor; std::invalid_argument (naming the type and sizes) when
// cols is not a multiple of the block size or `nbytes` is not exactly that many bytes.
int64_t checked_bytes(const TypeInfo& t, int64_t rows, int64_t cols, int64_t nbytes);

// Index of the first block whose fp16 scale (or min) is inf or NaN, or -1.
int64_t first_bad_scale(const TypeInfo& t, const uint8_t* src, int64_t nblocks);

enum class OutDType : int { f32 = 0, bf16 = 1 };

// dst (rows x cols, float32 or bfloat16) = the values of src. Throws std::invalid_argument
// for bad sizes and std::domain_error naming the block of a non-finite scale.
void dequantize(const TypeInfo& t, const uint8_t* src, int64_t nbytes, int64_t rows, int64_t cols,
                void* dst, OutDType out, int threads);

// dst = the blocks of src (rows x cols float32), for q8_0, q4_0, q4_1, q5_0, q5_1, q4_k.
// Throws std::domain_error naming the row of a non-finite value or of a scale beyond fp16.
void quantize(const TypeInfo& t, const float* src, int64_t rows, int64_t cols, uint8_t* dst,
              int64_t nbytes, int threads);

// How matmul treats the activations x.
enum class Acts : int {
  // Exact weights times float32 x: |y - y_exact| <= K * 2^-24 * sum_k |x_k w_k|.
  f32 = 0,
  // x quantized once per call to 8 bits per block of 32 (256 for the K-quants times more
  // than 16 rows: int_operands_k.hpp; xd_b = max |x_k| / 127 over the block, xq_k =
  // round(x_k / xd_b)), then integer dot products with the weights' quants:
  // |y - x.w| <= sum_b e_b sum_{k in b} |w_k| + (K / 16 + 16) * 2^-24 * E, where
  // e_b = xd_b / 2 * (1 + 2^-20) (or max |x_k| when xd_b underflows to 0) bounds the
  // activation error and E = sum_k (|x_k| + e_b) (|w_k| + 2 |o_k|), o_k being the
  // block's offset (-8 d for Q4_0, -dmin * m_j for Q4_K, ...; int_operands.hpp), bounds
  // the float rounding of the scales and sums; plus 2^-149 (K * 255 * 127 + sum_k |o_k| +
  // K) for scale products below float32's normal range (K * 8064 * 127 in place of
  // K * 255 * 127 with blocks of 256: it covers |sc q xq| <= 8064 * 127 per value).
  int8 = 1,
};

// y (M x N) = x (M x K, float32, row stride K) . W^T, W being N x K in blocks of type t.
void matmul(const TypeInfo& t, const float* x, int64_t M, int64_t K, const uint8_t* w,
            int64_t nbytes, int64_t N, float* y, int threads, Acts acts = Acts::int8);

// Whether the AVX-512 variant uses its VNNI kernels (vpdpbusd): on by default where the CPU
// has AVX-512 VNNI. set_vnni(false) forces the plain AVX-512 BW kernels (tests);
// set_vnni(true) throws std::invalid_argument on a CPU without VNNI.
bool cpu_has_vnni();
bool vnni_enabled();
void set_vnni(bool on);

// The kernels of each variant (dequantize.cpp, matmul.cpp). Sizes are checked already.
LLMCORE_ISA_DECLARE(
    int64_t dequantize_rows(QType t, const uint8_t* src, int64_t rows, int64_t cols, void* dst,
                            OutDType out, int threads);
    int64_t dequant_row_f32(QType t, const uint8_t* src, int64_t nblocks, float* out);
    void matmul(QType t, const float* x, int64_t M, int64_t K, const uint8_t* w, int64_t N,
                float* y, int threads, Acts acts);
    void matmul_int(QType t, const float* x, int64_t M, int64_t K, const uint8_t* w, int64_t N,
                    float* y, int threads);)

}  // namespace llmcore::quant
