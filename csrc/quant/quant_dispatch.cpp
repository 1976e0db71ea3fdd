// The quant entry points: the type table, size and scale checks shared by every variant,
// and the run-time choice of the instruction-set variant that does the work.
#include <atomic>
#include <cstring>
#include <stdexcept>
#include <string>

#include "quant/quant.hpp"

namespace llmcore::quant {
namespace {

std::string valid_types() {
  std::string s;
  for (const TypeInfo& t : kTypes) s += (s.empty() ? "" : ", ") + std::string(t.name);
  return s;
}

// Byte offsets of a block's fp16 factors (the scale, and the min where there is one).
void factor_offsets(QType t, int& first, int& second) {
  second = -1;
  switch (t) {
    case QType::q4_1: case QType::q5_1: case QType::q4_k: case QType::q5_k: first = 0; second = 2; break;
    case QType::q6_k: first = 208; break;
    default: first = 0; break;
  }
}

}  // namespace

const TypeInfo& type_info(int ggml_type) {
  for (const TypeInfo& t : kTypes)
    if (static_cast<int>(t.type) == ggml_type) return t;
  throw std::invalid_argument("quant: unknown type id " + std::to_string(ggml_type) +
                              "; valid: " + valid_types());
}

int64_t checked_bytes(const TypeInfo& t, int64_t rows, int64_t cols, int64_t nbytes) {
  const std::string name(t.name);
  if (rows < 0 || cols < 0)
    throw std::invalid_argument(name + ": negative shape " + std::to_string(rows) + " x " + std::to_string(cols));
  if (cols % t.block_elems != 0)
    throw std::invalid_argument(name + ": row length " + std::to_string(cols) +
                                " is not a multiple of the block size " + std::to_string(t.block_elems));
  const int64_t blocks_per_row = cols / t.block_elems;
  if (rows > 0 && blocks_per_row > INT64_MAX / t.block_bytes / rows)
    throw std::invalid_argument(name + ": shape too large");
  const int64_t need = rows * blocks_per_row * t.block_bytes;
  if (nbytes != need)
    throw std::invalid_argument(name + ": buffer of " + std::to_string(nbytes) + " bytes, but " +
                                std::to_string(rows) + " x " + std::to_string(cols) + " values take " +
                                std::to_string(rows * blocks_per_row) + " blocks of " +
                                std::to_string(t.block_bytes) + " bytes = " + std::to_string(need));
  return need;
}

int64_t first_bad_scale(const TypeInfo& t, const uint8_t* src, int64_t nblocks) {
  int first, second;
  factor_offsets(t.type, first, second);
  for (int64_t i = 0; i < nblocks; ++i) {
    const uint8_t* b = src + i * t.block_bytes;
    for (int off : {first, second}) {
      if (off < 0) continue;
      uint16_t h;
      std::memcpy(&h, b + off, sizeof h);
      if ((h & 0x7c00u) == 0x7c00u) return i;
    }
  }
  return -1;
}

static void throw_bad_scale(const TypeInfo& t, int64_t block) {
  throw std::domain_error(std::string(t.name) + ": block " + std::to_string(block) +
                          " has a NaN or infinite fp16 scale (corrupt data)");
}

void dequantize(const TypeInfo& t, const uint8_t* src, int64_t nbytes, int64_t rows, int64_t cols,
                void* dst, OutDType out, int threads) {
  checked_bytes(t, rows, cols, nbytes);
  if (out != OutDType::f32 && out != OutDType::bf16)
    throw std::invalid_argument("dequantize: output dtype code must be 0 (float32) or 1 (bfloat16)");
  if (rows == 0 || cols == 0) return;
  const int64_t bad = [&]() -> int64_t {
    LLMCORE_ISA_DISPATCH(dequantize_rows(t.type, src, rows, cols, dst, out, threads));
  }();
  if (bad >= 0) throw_bad_scale(t, bad);
}

void matmul(const TypeInfo& t, const float* x, int64_t M, int64_t K, const uint8_t* w,
            int64_t nbytes, int64_t N, float* y, int threads, Acts acts) {
  if (acts != Acts::f32 && acts != Acts::int8)
    throw std::invalid_argument("matmul: activations code must be 0 (float32) or 1 (int8)");
  checked_bytes(t, N, K, nbytes);
  if (M < 0) throw std::invalid_argument(std::string(t.name) + ": negative number of input rows");
  if (M == 0 || N == 0) return;
  if (K == 0) {
    std::memset(y, 0, sizeof(float) * static_cast<size_t>(M * N));
    return;
  }
  LLMCORE_ISA_DISPATCH(matmul(t.type, x, M, K, w, N, y, threads, acts));
}

bool cpu_has_vnni() {
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__clang__) || defined(__GNUC__))
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512vnni") != 0;
#else
  return false;
#endif
}

static std::atomic<bool>& vnni_flag() {
  static std::atomic<bool> on{cpu_has_vnni()};
  return on;
}

bool vnni_enabled() { return vnni_flag().load(std::memory_order_relaxed); }

void set_vnni(bool on) {
  if (on && !cpu_has_vnni())
    throw std::invalid_argument("quant: this CPU lacks AVX-512 VNNI; only set_vnni(False) is valid");
  vnni_flag().store(on, std::memory_order_relaxed);
}

}  // namespace llmcore::quant
