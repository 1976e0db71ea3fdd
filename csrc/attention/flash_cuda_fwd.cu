// Flash attention on NVIDIA GPUs (sm_80 and newer), forward pass: fp16/bf16 inputs, fp32
// accumulation, tensor-core tile products through WMMA, causal/window/padding/additive
// masks and grouped-query attention, same semantics as the CPU kernels (flash_cpu.hpp).
//
// One block of 4 warps per (batch*head, 64-query tile); each warp owns 16 query rows. Per
// 64-key tile: S = Q K^T (tensor cores) -> shared memory, online softmax by two lanes per
// row, O += P V (tensor cores, O kept in shared memory in fp32).
#include "flash_cuda_common.cuh"

namespace llmcore::attn {
namespace {

template <class T>
__global__ void __launch_bounds__(kThreads)
    fwd_kernel(Dev p, const T* q, Str4 qs, const T* k, Str4 ks, const T* v, Str4 vs, T* o,
               Str4 os, float* lse) {
  extern __shared__ __align__(128) unsigned char smem[];
  const int D = static_cast<int>(p.D), ldt = D + 8, ldo = D + 4;
  T* Qs = reinterpret_cast<T*>(smem);
  T* Ks = Qs + kBr * ldt;
  T* Vs = Ks + kBc * ldt;
  T* Ps = Vs + kBc * ldt;
  float* Ss = reinterpret_cast<float*>(Ps + kBr * kLdP);
  float* Os = Ss + kBr * kLdS;

  const int64_t bh = blockIdx.x, b = bh / p.H, h = bh % p.H, hk = h / (p.H / p.Hkv);
  const int64_t nqt = (p.Tq + kBr - 1) / kBr;
  const int64_t i0 = (nqt - 1 - blockIdx.y) * kBr;  // heaviest causal tiles first
  const int64_t nq = min(static_cast<int64_t>(kBr), p.Tq - i0);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int r = warp * 16 + lane / 2, half = lane % 2;  // this lane's row and column half
  const int64_t i = i0 + r;
  const bool row_ok = r < nq;

  load_rows(Qs, ldt, q, qs, b, h, i0, nq, kBr, D);
  for (int idx = threadIdx.x; idx < kBr * ldo; idx += blockDim.x) Os[idx] = 0.f;

  const int64_t off = p.Tk - p.Tq, kvlen = kvlen_of(p, b);
  int64_t jhi = kvlen, jlo = 0;
  if (p.causal) jhi = min(jhi, i0 + nq + off);
  if (p.window > 0) jlo = max(static_cast<int64_t>(0), i0 + off - p.window + 1);
  float m = -INFINITY, l = 0.f;
  __syncthreads();  // Q and the zeroed O are visible, even when no key tile follows

  for (int64_t j0 = jlo; j0 < jhi; j0 += kBc) {
    const int64_t nk = min(static_cast<int64_t>(kBc), jhi - j0);
    __syncthreads();  // the previous tile is no longer read
    load_rows(Ks, ldt, k, ks, b, hk, j0, nk, kBc, D);
    load_rows(Vs, ldt, v, vs, b, hk, j0, nk, kBc, D);
    __syncthreads();
    rows_times_keys(Ss + warp * 16 * kLdS, Qs + warp * 16 * ldt, ldt, Ks, ldt, D);
    __syncwarp();
    float sv[kBc / 2];
    float mx = -INFINITY;
#pragma unroll
    for (int c = 0; c < kBc / 2; ++c) {
      const int col = half * (kBc / 2) + c;
      const int64_t j = j0 + col;
      const bool ok = row_ok && col < nk && visible(p, i, j, kvlen);
      sv[c] = score(p, Ss[r * kLdS + col], b, h, i, j, ok);
      mx = fmaxf(mx, sv[c]);
    }
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    const float mnew = fmaxf(m, mx);
    const float muse = mnew == -INFINITY ? 0.f : mnew;  // all hidden so far: avoid inf - inf
    const float alpha = m == -INFINITY ? 0.f : __expf(m - muse);
    float sum = 0.f;
#pragma unroll
    for (int c = 0; c < kBc / 2; ++c) {
      const float e = sv[c] == -INFINITY ? 0.f : __expf(sv[c] - muse);
      sum += e;
      Ps[r * kLdP + half * (kBc / 2) + c] = fromf<T>(e);
    }
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    l = l * alpha + sum;
    m = mnew;
    for (int d = half; d < D; d += 2) Os[r * ldo + d] *= alpha;
    __syncwarp();
    for (int n = 0; n < D / 16; ++n) {
      AccFrag acc;
      float* on = Os + warp * 16 * ldo + n * 16;
      wmma::load_matrix_sync(acc, on, ldo, wmma::mem_row_major);
      for (int kk = 0; kk < kBc / 16; ++kk) {
        RowA<T> fa;
        RowB<T> fb;
        wmma::load_matrix_sync(fa, Ps + warp * 16 * kLdP + kk * 16, kLdP);
        wmma::load_matrix_sync(fb, Vs + kk * 16 * ldt + n * 16, ldt);
        wmma::mma_sync(acc, fa, fb, acc);
      }
      wmma::store_matrix_sync(on, acc, ldo, wmma::mem_row_major);
    }
    __syncwarp();
  }
  if (row_ok) {
    const float inv = l > 0.f ? 1.f / l : 0.f;  // a query that sees no key -> 0
    T* dst = o + b * os.s[0] + h * os.s[1] + i * os.s[2];
    for (int d = half; d < D; d += 2) dst[d * os.s[3]] = fromf<T>(Os[r * ldo + d] * inv);
    if (half == 0 && lse != nullptr) lse[bh * p.Tq + i] = l > 0.f ? m + logf(l) : -INFINITY;
  }
}


template <class T>
void forward_t(const Dev& d, const FwdBuffers& b, cudaStream_t stream) {
  const int D = static_cast<int>(d.D);
  const size_t bytes = sizeof(T) * static_cast<size_t>((kBr + 2 * kBc) * (D + 8) + kBr * kLdP) +
                       sizeof(float) * static_cast<size_t>(kBr * kLdS + kBr * (D + 4));
  check(cudaFuncSetAttribute(fwd_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             static_cast<int>(bytes)),
        "shared memory");
  const dim3 grid(static_cast<unsigned>(d.B * d.H), static_cast<unsigned>((d.Tq + kBr - 1) / kBr));
  fwd_kernel<T><<<grid, kThreads, bytes, stream>>>(
      d, static_cast<const T*>(b.q.data), str(b.q), static_cast<const T*>(b.k.data), str(b.k),
      static_cast<const T*>(b.v.data), str(b.v), const_cast<T*>(static_cast<const T*>(b.o.data)),
      str(b.o), static_cast<float*>(b.lse));
  check(cudaGetLastError(), "forward launch");
}


}  // namespace

bool cuda_attention_built() { return true; }

void flash_forward_cuda(const AttnProblem& p, const FwdBuffers& b, void* stream) {
  check_problem(p);
  const Dev d = device_problem(p, kMaxDFwd);
  if (p.B == 0 || p.Tq == 0) return;
  auto s = static_cast<cudaStream_t>(stream);
  if (p.dtype == DType::bf16)
    forward_t<__nv_bfloat16>(d, b, s);
  else
    forward_t<__half>(d, b, s);
}

}  // namespace llmcore::attn
