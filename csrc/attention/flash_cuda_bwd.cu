// Flash attention on NVIDIA GPUs, backward pass (FlashAttention-2): one block per
// (batch*kv_head, 64-key tile), looping over the query heads that share it and their
// query tiles; dK and dV stay in registers, dQ is accumulated in fp32 with atomics and
// converted at the end. P is recomputed from the forward's logsumexp.
#include "flash_cuda_common.cuh"

namespace llmcore::attn {
namespace {

template <class T>
__global__ void delta_kernel(Dev p, const T* o, Str4 os, const T* g, Str4 gs, float* delta) {
  const int64_t row = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (row >= p.B * p.H * p.Tq) return;
  const int64_t i = row % p.Tq, bh = row / p.Tq, b = bh / p.H, h = bh % p.H;
  const T* orow = o + b * os.s[0] + h * os.s[1] + i * os.s[2];
  const T* grow = g + b * gs.s[0] + h * gs.s[1] + i * gs.s[2];
  float s = 0.f;
  for (int64_t d = lane; d < p.D; d += 32) s += tof(orow[d * os.s[3]]) * tof(grow[d * gs.s[3]]);
  for (int w = 16; w > 0; w /= 2) s += __shfl_xor_sync(0xffffffffu, s, w);
  if (lane == 0) delta[row] = s;
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    bwd_kernel(Dev p, const T* q, Str4 qs, const T* k, Str4 ks, const T* v, Str4 vs, const T* g,
               Str4 gs, const float* lse, const float* delta, float* dq_acc, T* dk, Str4 dks,
               T* dv, Str4 dvs) {
  extern __shared__ __align__(128) unsigned char smem[];
  const int D = static_cast<int>(p.D), ldt = D + 8, ldq = D + 4;
  T* Ks = reinterpret_cast<T*>(smem);
  T* Vs = Ks + kBc * ldt;
  T* Qs = Vs + kBc * ldt;
  T* Gs = Qs + kBr * ldt;
  T* Ps = Gs + kBr * ldt;
  T* dSs = Ps + kBr * kLdP;
  float* Ss = reinterpret_cast<float*>(dSs + kBr * kLdP);
  float* dPs = Ss + kBr * kLdS;
  float* dQs = dPs + kBr * kLdS;
  float* lse_s = dQs + kBr * ldq;
  float* delta_s = lse_s + kBr;

  const int64_t bhk = blockIdx.x, b = bhk / p.Hkv, hk = bhk % p.Hkv, grp = p.H / p.Hkv;
  const int64_t j0 = static_cast<int64_t>(blockIdx.y) * kBc;
  const int64_t kvlen = kvlen_of(p, b), off = p.Tk - p.Tq;
  const int64_t nk = min(static_cast<int64_t>(kBc), p.Tk - j0);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int r = warp * 16 + lane / 2, half = lane % 2;
  const int nd = D / 16;

  load_rows(Ks, ldt, k, ks, b, hk, j0, nk, kBc, D);
  load_rows(Vs, ldt, v, vs, b, hk, j0, nk, kBc, D);
  AccFrag dKf[kMaxDBwd / 16], dVf[kMaxDBwd / 16];
#pragma unroll
  for (int n = 0; n < kMaxDBwd / 16; ++n) {
    wmma::fill_fragment(dKf[n], 0.f);
    wmma::fill_fragment(dVf[n], 0.f);
  }
  // Query rows that see any key of this tile.
  int64_t qlo = 0, qhi = p.Tq;
  if (p.causal) qlo = max(static_cast<int64_t>(0), j0 - off);
  if (p.window > 0) qhi = min(p.Tq, j0 + kBc - 1 - off + p.window);
  if (j0 >= kvlen) qhi = qlo;  // all padding: gradients are zero

  for (int64_t gi = 0; gi < grp; ++gi) {
    const int64_t h = hk * grp + gi, bh = b * p.H + h;
    for (int64_t i0 = qlo / kBr * kBr; i0 < qhi; i0 += kBr) {
      const int64_t nq = min(static_cast<int64_t>(kBr), p.Tq - i0);
      __syncthreads();
      load_rows(Qs, ldt, q, qs, b, h, i0, nq, kBr, D);
      load_rows(Gs, ldt, g, gs, b, h, i0, nq, kBr, D);
      for (int t = threadIdx.x; t < kBr; t += blockDim.x) {
        float ls = t < nq ? lse[bh * p.Tq + i0 + t] : INFINITY;
        lse_s[t] = ls == -INFINITY ? INFINITY : ls;  // a row that saw no key: P = 0
        delta_s[t] = t < nq ? delta[bh * p.Tq + i0 + t] : 0.f;
      }
      __syncthreads();
      rows_times_keys(Ss + warp * 16 * kLdS, Qs + warp * 16 * ldt, ldt, Ks, ldt, D);
      rows_times_keys(dPs + warp * 16 * kLdS, Gs + warp * 16 * ldt, ldt, Vs, ldt, D);
      __syncwarp();
      const int64_t i = i0 + r;
      for (int c = 0; c < kBc / 2; ++c) {
        const int col = half * (kBc / 2) + c;
        const int64_t j = j0 + col;
        const bool ok = r < nq && col < nk && visible(p, i, j, kvlen);
        const float s = score(p, Ss[r * kLdS + col], b, h, i, j, ok);
        const float pr = ok ? __expf(s - lse_s[r]) : 0.f;
        Ps[r * kLdP + col] = fromf<T>(pr);
        dSs[r * kLdP + col] = fromf<T>(pr * (dPs[r * kLdS + col] - delta_s[r]));
      }
      __syncthreads();
      // dV += P^T dO and dK += dS^T Q for this warp's 16 keys.
#pragma unroll
      for (int n = 0; n < kMaxDBwd / 16; ++n) {
        if (n >= nd) break;
        for (int kk = 0; kk < kBr / 16; ++kk) {
          ColA<T> fa;
          RowB<T> fb;
          wmma::load_matrix_sync(fa, Ps + kk * 16 * kLdP + warp * 16, kLdP);
          wmma::load_matrix_sync(fb, Gs + kk * 16 * ldt + n * 16, ldt);
          wmma::mma_sync(dVf[n], fa, fb, dVf[n]);
          wmma::load_matrix_sync(fa, dSs + kk * 16 * kLdP + warp * 16, kLdP);
          wmma::load_matrix_sync(fb, Qs + kk * 16 * ldt + n * 16, ldt);
          wmma::mma_sync(dKf[n], fa, fb, dKf[n]);
        }
      }
      // dQ (this warp's 16 query rows) += dS K, added to the fp32 accumulator.
      for (int n = 0; n < nd; ++n) {
        AccFrag acc;
        wmma::fill_fragment(acc, 0.f);
        for (int kk = 0; kk < kBc / 16; ++kk) {
          RowA<T> fa;
          RowB<T> fb;
          wmma::load_matrix_sync(fa, dSs + warp * 16 * kLdP + kk * 16, kLdP);
          wmma::load_matrix_sync(fb, Ks + kk * 16 * ldt + n * 16, ldt);
          wmma::mma_sync(acc, fa, fb, acc);
        }
        wmma::store_matrix_sync(dQs + warp * 16 * ldq + n * 16, acc, ldq, wmma::mem_row_major);
      }
      __syncwarp();
      for (int idx = lane; idx < 16 * D; idx += 32) {
        const int rr = warp * 16 + idx / D, d = idx % D;
        if (rr < nq) atomicAdd(dq_acc + ((bh * p.Tq) + i0 + rr) * p.D + d, dQs[rr * ldq + d]);
      }
    }
  }
  // Write this warp's 16 rows of dK (times scale) and dV through the dQ staging area.
  __syncthreads();
  for (int pass = 0; pass < 2; ++pass) {
#pragma unroll
    for (int n = 0; n < kMaxDBwd / 16; ++n) {
      if (n >= nd) break;
      wmma::store_matrix_sync(dQs + warp * 16 * ldq + n * 16, pass == 0 ? dKf[n] : dVf[n], ldq,
                              wmma::mem_row_major);
    }
    __syncwarp();
    T* base = pass == 0 ? dk : dv;
    const Str4& st = pass == 0 ? dks : dvs;
    const float mul = pass == 0 ? p.scale : 1.f;
    for (int idx = lane; idx < 16 * D; idx += 32) {
      const int rr = warp * 16 + idx / D, d = idx % D;
      if (rr < nk)
        base[b * st.s[0] + hk * st.s[1] + (j0 + rr) * st.s[2] + d * st.s[3]] =
            fromf<T>(dQs[rr * ldq + d] * mul);
    }
    __syncwarp();
  }
}

template <class T>
__global__ void dq_kernel(Dev p, const float* dq_acc, T* dq, Str4 st) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= p.B * p.H * p.Tq * p.D) return;
  const int64_t d = idx % p.D, row = idx / p.D, i = row % p.Tq, bh = row / p.Tq;
  const int64_t b = bh / p.H, h = bh % p.H;
  dq[b * st.s[0] + h * st.s[1] + i * st.s[2] + d * st.s[3]] = fromf<T>(dq_acc[idx] * p.scale);
}

template <class T>
void backward_t(const Dev& d, const BwdBuffers& b, cudaStream_t stream) {
  const int D = static_cast<int>(d.D);
  const int64_t rows = d.B * d.H * d.Tq;
  float* delta = nullptr;
  float* dq_acc = nullptr;
  check(cudaMallocAsync(&delta, sizeof(float) * static_cast<size_t>(rows > 0 ? rows : 1), stream),
        "alloc");
  check(cudaMallocAsync(&dq_acc, sizeof(float) * static_cast<size_t>(rows > 0 ? rows * d.D : 1), stream),
        "alloc");
  check(cudaMemsetAsync(dq_acc, 0, sizeof(float) * static_cast<size_t>(rows * d.D), stream), "memset");
  if (rows > 0) {
    delta_kernel<T><<<static_cast<unsigned>((rows * 32 + 255) / 256), 256, 0, stream>>>(
        d, static_cast<const T*>(b.o.data), str(b.o), static_cast<const T*>(b.dout.data),
        str(b.dout), delta);
    check(cudaGetLastError(), "delta launch");
  }
  const size_t bytes =
      sizeof(T) * static_cast<size_t>((2 * kBc + 2 * kBr) * (D + 8) + 2 * kBr * kLdP) +
      sizeof(float) * static_cast<size_t>(2 * kBr * kLdS + kBr * (D + 4) + 2 * kBr);
  check(cudaFuncSetAttribute(bwd_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             static_cast<int>(bytes)),
        "shared memory");
  const dim3 grid(static_cast<unsigned>(d.B * d.Hkv), static_cast<unsigned>((d.Tk + kBc - 1) / kBc));
  bwd_kernel<T><<<grid, kThreads, bytes, stream>>>(
      d, static_cast<const T*>(b.q.data), str(b.q), static_cast<const T*>(b.k.data), str(b.k),
      static_cast<const T*>(b.v.data), str(b.v), static_cast<const T*>(b.dout.data), str(b.dout),
      static_cast<const float*>(b.lse), delta, dq_acc,
      const_cast<T*>(static_cast<const T*>(b.dk.data)), str(b.dk),
      const_cast<T*>(static_cast<const T*>(b.dv.data)), str(b.dv));
  check(cudaGetLastError(), "backward launch");
  if (rows > 0) {
    dq_kernel<T><<<static_cast<unsigned>((rows * d.D + 255) / 256), 256, 0, stream>>>(
        d, dq_acc, const_cast<T*>(static_cast<const T*>(b.dq.data)), str(b.dq));
    check(cudaGetLastError(), "dq launch");
  }
  check(cudaFreeAsync(delta, stream), "free");
  check(cudaFreeAsync(dq_acc, stream), "free");
}


}  // namespace

void flash_backward_cuda(const AttnProblem& p, const BwdBuffers& b, void* stream) {
  check_problem(p);
  const Dev d = device_problem(p, kMaxDBwd);
  if (p.B == 0 || p.Tk == 0) return;
  auto s = static_cast<cudaStream_t>(stream);
  if (p.dtype == DType::bf16)
    backward_t<__nv_bfloat16>(d, b, s);
  else
    backward_t<__half>(d, b, s);
}

}  // namespace llmcore::attn
