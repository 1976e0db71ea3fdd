// Shared pieces of the CUDA attention kernels (flash_cuda_fwd.cu, flash_cuda_bwd.cu):
// problem description, element conversion, masks, tile loads and the WMMA tile product.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "flash_cuda.hpp"

namespace llmcore::attn {
namespace {

using namespace nvcuda;

constexpr int kBr = 64;  // query rows per tile
constexpr int kBc = 64;  // keys per tile
constexpr int kThreads = 128;
constexpr int kMaxDFwd = 256;
constexpr int kMaxDBwd = 128;
constexpr int kLdS = kBc + 4;  // fp32 score rows (padding against bank conflicts)
constexpr int kLdP = kBc + 8;  // 16-bit probability rows

struct Str4 {
  int64_t s[4];
};

struct Dev {
  int64_t B, H, Hkv, Tq, Tk, D;
  float scale;
  int causal;
  int64_t window;
  const float* mask;
  int64_t ms[4];
  const int64_t* kv_lens;
};

template <class T>
__device__ __forceinline__ float tof(T x);
template <>
__device__ __forceinline__ float tof(__nv_bfloat16 x) { return __bfloat162float(x); }
template <>
__device__ __forceinline__ float tof(__half x) { return __half2float(x); }

template <class T>
__device__ __forceinline__ T fromf(float x);
template <>
__device__ __forceinline__ __nv_bfloat16 fromf(float x) { return __float2bfloat16_rn(x); }
template <>
__device__ __forceinline__ __half fromf(float x) { return __float2half_rn(x); }

__device__ __forceinline__ int64_t kvlen_of(const Dev& p, int64_t b) {
  if (p.kv_lens == nullptr) return p.Tk;
  const int64_t n = p.kv_lens[b];
  return n < 0 ? 0 : (n > p.Tk ? p.Tk : n);
}

__device__ __forceinline__ bool visible(const Dev& p, int64_t i, int64_t j, int64_t kvlen) {
  if (j >= kvlen) return false;
  const int64_t pos = i + p.Tk - p.Tq;
  if (p.causal && j > pos) return false;
  if (p.window > 0 && j <= pos - p.window) return false;
  return true;
}

// Score of (query i, key j) from the raw product, or -inf when hidden.
__device__ __forceinline__ float score(const Dev& p, float raw, int64_t b, int64_t h, int64_t i,
                                       int64_t j, bool ok) {
  if (!ok) return -INFINITY;
  float s = raw * p.scale;
  if (p.mask != nullptr) s += p.mask[b * p.ms[0] + h * p.ms[1] + i * p.ms[2] + j * p.ms[3]];
  return s;
}

// rows [r0, r0 + nvalid) of head (b, h) into a (rows x D) shared tile, zero-filled below.
template <class T>
__device__ void load_rows(T* dst, int ld, const T* base, const Str4& st, int64_t b, int64_t h,
                          int64_t r0, int64_t nvalid, int rows, int D) {
  const T* src = base + b * st.s[0] + h * st.s[1];
  for (int idx = threadIdx.x; idx < rows * D; idx += blockDim.x) {
    const int r = idx / D, d = idx - r * D;
    dst[r * ld + d] = r < nvalid ? src[(r0 + r) * st.s[2] + d * st.s[3]] : fromf<T>(0.f);
  }
}

using AccFrag = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;
template <class T>
using RowA = wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major>;
template <class T>
using ColA = wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::col_major>;
template <class T>
using RowB = wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major>;
template <class T>
using ColB = wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major>;

// out (16 x kBc, fp32, ld kLdS) = A (16 x D rows of a, ld lda) . B^T (B: kBc x D, ld ldb).
template <class T>
__device__ void rows_times_keys(float* out, const T* a, int lda, const T* bm, int ldb, int D) {
  for (int n = 0; n < kBc / 16; ++n) {
    AccFrag acc;
    wmma::fill_fragment(acc, 0.f);
    for (int kk = 0; kk < D / 16; ++kk) {
      RowA<T> fa;
      ColB<T> fb;
      wmma::load_matrix_sync(fa, a + kk * 16, lda);
      wmma::load_matrix_sync(fb, bm + n * 16 * ldb + kk * 16, ldb);
      wmma::mma_sync(acc, fa, fb, acc);
    }
    wmma::store_matrix_sync(out + n * 16, acc, kLdS, wmma::mem_row_major);
  }
}

inline void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess)
    throw std::runtime_error(std::string("attention (CUDA) ") + what + ": " + cudaGetErrorString(e));
}

inline Dev device_problem(const AttnProblem& p, int max_d) {
  if (p.dtype != DType::bf16 && p.dtype != DType::f16)
    throw std::invalid_argument("attention (CUDA): dtype must be bfloat16 or float16");
  if (p.D % 16 != 0 || p.D > max_d)
    throw std::invalid_argument("attention (CUDA): head dim must be a multiple of 16 up to " +
                                std::to_string(max_d));
  Dev d{};
  d.B = p.B;
  d.H = p.H;
  d.Hkv = p.Hkv;
  d.Tq = p.Tq;
  d.Tk = p.Tk;
  d.D = p.D;
  d.scale = static_cast<float>(p.scale);
  d.causal = p.causal ? 1 : 0;
  d.window = p.window;
  d.mask = static_cast<const float*>(p.mask.data);
  for (int i = 0; i < 4; ++i) d.ms[i] = p.mask.s[i];
  d.kv_lens = p.kv_lens;
  return d;
}

inline Str4 str(const Strided& t) { return Str4{{t.s[0], t.s[1], t.s[2], t.s[3]}}; }

}  // namespace
}  // namespace llmcore::attn
