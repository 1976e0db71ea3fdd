// Backward pass of the CPU flash attention kernel (FlashAttention-2 style).
//
// P is recomputed tile by tile from the saved logsumexp, so memory stays O(T). One task
// owns a kv head (b, hk): it loops over the query heads sharing it and accumulates dK and
// dV for the whole kv head and dQ for one query head at a time, so no two threads ever
// write the same output and no atomics are needed. Per tile (keys x queries, transposed):
//   St  = K . Qs^T          P   = exp(St - lse)
//   dPt = V . dO^T          dSt = P * (dPt - delta),  delta_i = sum_d dO_id O_id
//   dV += P . dO            dK += dSt . Qs            dQt += K^T . dSt
// where Qs = scale * q, so dK needs no extra scaling and dq = scale * dQt^T.
#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <type_traits>

#include "flash_cpu.hpp"
#include "simd.hpp"
#include "tiles.hpp"

#ifdef LLMCORE_OPENMP
#include <omp.h>
#endif

#pragma GCC diagnostic ignored "-Wpsabi"

namespace llmcore::attn::LLMCORE_ISA_NS {
namespace {

constexpr int64_t kBq = 64;
constexpr int64_t kBk = 64;

template <class In>
const In* at(const Strided& t, int64_t b, int64_t h, int64_t i) {
  return static_cast<const In*>(t.data) + b * t.s[0] + h * t.s[1] + i * t.s[2];
}

template <class In>
In* at_mut(const Strided& t, int64_t b, int64_t h, int64_t i) {
  return const_cast<In*>(at<In>(t, b, h, i));
}

template <class In, class Acc>
struct Backward {
  const AttnProblem& p;
  const BwdBuffers& io;
  using V = Vec<Acc>;
  static constexpr int64_t L = Simd<Acc>::L;

  int64_t Tqp() const { return round_up(std::max<int64_t>(p.Tq, 1), kBq); }
  int64_t Dp() const { return round_up(p.D, L); }

  size_t workspace() const {
    const int64_t D = p.D, Tqp_ = Tqp(), Dp_ = Dp();
    // Qst, dOt, dQt (D x Tqp); Qs, dOr (Tqp x Dp); lse, delta (Tqp); dK, dV (Tk x Dp);
    // K, V blocks (kBk x D); St, dPt (kBk x kBq).
    return static_cast<size_t>(3 * D * Tqp_ + 2 * Tqp_ * Dp_ + 2 * Tqp_ + 2 * p.Tk * Dp_ +
                               2 * kBk * D + 2 * kBk * kBq);
  }

  // Keys [jb, je) of kv head (b, hk). dq_part == nullptr: this task sees every key, so it
  // writes dq itself; else it adds scale * dQ into dq_part, a (B, H, Tq, D) Acc array that
  // run() sums over threads.
  void kv_head(int64_t b, int64_t hk, int64_t jb, int64_t je, Acc* ws,
               Acc* dq_part) const {
    const int64_t D = p.D, Tq = p.Tq, Tk = p.Tk, grp = p.H / p.Hkv;
    const int64_t Tqp_ = Tqp(), Dp_ = Dp();
    Acc* Qst = ws;
    Acc* dOt = Qst + D * Tqp_;
    Acc* dQt = dOt + D * Tqp_;
    Acc* Qs = dQt + D * Tqp_;
    Acc* dOr = Qs + Tqp_ * Dp_;
    Acc* lse = dOr + Tqp_ * Dp_;
    Acc* delta = lse + Tqp_;
    Acc* dK = delta + Tqp_;
    Acc* dV = dK + Tk * Dp_;
    Acc* Kc = dV + Tk * Dp_;
    Acc* Vc = Kc + kBk * D;
    Acc* St = Vc + kBk * D;
    Acc* dPt = St + kBk * kBq;
    const Acc scale = static_cast<Acc>(p.scale);
    const Acc inf = std::numeric_limits<Acc>::infinity();

    int64_t kvlen = Tk;
    if (p.kv_lens != nullptr) kvlen = std::clamp<int64_t>(p.kv_lens[b], 0, Tk);
    const KeyRange kr{Tk - Tq, kvlen, p.causal, p.window};
    je = std::min(je, Tk);
    std::fill(dK + jb * Dp_, dK + je * Dp_, Acc(0));
    std::fill(dV + jb * Dp_, dV + je * Dp_, Acc(0));
    const Acc* lse_in = static_cast<const Acc*>(io.lse);

    for (int64_t g = 0; g < grp; ++g) {
      const int64_t h = hk * grp + g;
      // Pack this head's queries and output gradients both ways; padding rows are zero
      // and get lse = +inf, so their probabilities are exactly 0.
      std::fill(Qst, Qst + 3 * D * Tqp_ + 2 * Tqp_ * Dp_, Acc(0));
      for (int64_t i = 0; i < Tqp_; ++i) {
        if (i >= Tq) {
          lse[i] = inf;
          delta[i] = 0;
          continue;
        }
        const In* qi = at<In>(io.q, b, h, i);
        const In* gi = at<In>(io.dout, b, h, i);
        const In* oi = at<In>(io.o, b, h, i);
        Acc dl = 0;
        for (int64_t d = 0; d < D; ++d) {
          const Acc qv = to_acc(qi[d * io.q.s[3]]) * scale;
          const Acc gv = to_acc(gi[d * io.dout.s[3]]);
          Qst[d * Tqp_ + i] = qv;
          Qs[i * Dp_ + d] = qv;
          dOt[d * Tqp_ + i] = gv;
          dOr[i * Dp_ + d] = gv;
          dl += gv * to_acc(oi[d * io.o.s[3]]);
        }
        delta[i] = dl;
        const Acc li = lse_in[(b * p.H + h) * Tq + i];
        lse[i] = li == -inf ? inf : li;  // a query that saw no key has P = 0 everywhere
      }
      const Acc* mbh = nullptr;
      if (p.mask.data != nullptr)
        mbh = static_cast<const Acc*>(p.mask.data) + b * p.mask.s[0] + h * p.mask.s[1];

      const int64_t jend = std::min(je, kvlen);
      for (int64_t j0 = jb; j0 < jend; j0 += kBk) {
        const int64_t nk = std::min(kBk, jend - j0);
        // Query tiles that see any key of this block.
        int64_t qlo = 0, qhi = Tq;
        if (p.causal) qlo = std::max<int64_t>(0, j0 - kr.off);
        if (p.window > 0) qhi = std::min<int64_t>(Tq, j0 + nk - 1 + p.window - kr.off);
        if (qlo >= qhi) continue;
        const Acc* K = rows(io.k, b, hk, j0, nk, Kc);
        const Acc* Vr = rows(io.v, b, hk, j0, nk, Vc);
        for (int64_t i0 = qlo / kBq * kBq; i0 < qhi; i0 += kBq) {
          const int64_t nq = std::min(kBq, Tq - i0);
          std::fill(St, St + 2 * kBk * kBq, Acc(0));
          gemm_acc<Acc>(nk, kBq, D, K, D, 1, Qst + i0, Tqp_, St, kBq);
          const bool positional = kr.partial(i0, i0 + nq, j0, j0 + nk);
          if (positional || mbh != nullptr)
            mask_tile<Acc>(St, kBq, nk, nq, j0, i0, kr, positional, mbh, p.mask.s[2], p.mask.s[3]);
          gemm_acc<Acc>(nk, kBq, D, Vr, D, 1, dOt + i0, Tqp_, dPt, kBq);
          for (int64_t jj = 0; jj < nk; ++jj) {
            for (int64_t c = 0; c < kBq; c += L) {
              const V pr = vexp(vload(St + jj * kBq + c) - vload(lse + i0 + c));
              vstore(St + jj * kBq + c, pr);
              vstore(dPt + jj * kBq + c, pr * (vload(dPt + jj * kBq + c) - vload(delta + i0 + c)));
            }
          }
          gemm_acc<Acc>(nk, Dp_, kBq, St, kBq, 1, dOr + i0 * Dp_, Dp_, dV + j0 * Dp_, Dp_);
          gemm_acc<Acc>(nk, Dp_, kBq, dPt, kBq, 1, Qs + i0 * Dp_, Dp_, dK + j0 * Dp_, Dp_);
          gemm_acc<Acc>(D, kBq, nk, K, 1, D, dPt, kBq, dQt + i0, Tqp_);
        }
      }
      for (int64_t i = 0; i < Tq; ++i) {
        if (dq_part != nullptr) {
          Acc* dst = dq_part + ((b * p.H + h) * Tq + i) * D;
          for (int64_t d = 0; d < D; ++d) dst[d] += dQt[d * Tqp_ + i] * scale;
        } else {
          In* dst = at_mut<In>(io.dq, b, h, i);
          for (int64_t d = 0; d < D; ++d) dst[d * io.dq.s[3]] = from_acc<In>(dQt[d * Tqp_ + i] * scale);
        }
      }
    }
    for (int64_t j = jb; j < je; ++j) {
      In* dk = at_mut<In>(io.dk, b, hk, j);
      In* dv = at_mut<In>(io.dv, b, hk, j);
      for (int64_t d = 0; d < D; ++d) {
        dk[d * io.dk.s[3]] = from_acc<In>(dK[j * Dp_ + d]);
        dv[d * io.dv.s[3]] = from_acc<In>(dV[j * Dp_ + d]);
      }
    }
  }

  // Rows [j0, j0 + nk) of k or v, converted to a dense (nk x D) Acc block.
  const Acc* rows(const Strided& t, int64_t b, int64_t hk, int64_t j0, int64_t nk, Acc* buf) const {
    for (int64_t jj = 0; jj < nk; ++jj) {
      const In* src = at<In>(t, b, hk, j0 + jj);
      for (int64_t d = 0; d < p.D; ++d) buf[jj * p.D + d] = to_acc(src[d * t.s[3]]);
    }
    return buf;
  }

  void run() const {
    // Fewer kv heads than about two per thread (small batch, few kv heads): split each
    // kv head's keys into chunks too, and sum the per-thread partial dq at the end.
    const int64_t heads = p.B * p.Hkv, nkb = (p.Tk + kBk - 1) / kBk;
    const int nthreads = thread_count(p, heads * nkb);
    int64_t nchunks = 1;
    if (nthreads > 1 && heads < 2 * nthreads)
      nchunks = std::min(nkb, (2 * nthreads + heads - 1) / heads);
    const int64_t ntasks = heads * nchunks;
    const int64_t dq_size = p.B * p.H * p.Tq * p.D;
    Buffer<Acc> dq_parts(nchunks > 1 ? static_cast<size_t>(nthreads * dq_size) : 0);
    const size_t ws_size = workspace();
#ifdef LLMCORE_OPENMP
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
#endif
    {
      Acc* ws = thread_scratch<Acc>(ws_size);
      int tid = 0;
#ifdef LLMCORE_OPENMP
      tid = omp_get_thread_num();
#endif
      Acc* part = nchunks > 1 ? dq_parts.data() + tid * dq_size : nullptr;
#ifdef LLMCORE_OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
      for (int64_t t = 0; t < ntasks; ++t) {
        const int64_t hd = t / nchunks, c = t % nchunks;
        const int64_t jb = c * nkb / nchunks * kBk, je = (c + 1) * nkb / nchunks * kBk;
        kv_head(hd / p.Hkv, hd % p.Hkv, jb, je, ws, part);
      }
      if (nchunks > 1) {
        const int64_t rows = p.B * p.H * p.Tq;
#ifdef LLMCORE_OPENMP
#pragma omp for schedule(static)
#endif
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t b = r / (p.H * p.Tq), h = r / p.Tq % p.H, i = r % p.Tq;
          In* dst = at_mut<In>(io.dq, b, h, i);
          for (int64_t d = 0; d < p.D; ++d) {
            Acc sum = 0;
            for (int th = 0; th < nthreads; ++th) sum += dq_parts[static_cast<size_t>(th * dq_size + r * p.D + d)];
            dst[d * io.dq.s[3]] = from_acc<In>(sum);
          }
        }
      }
    }
  }
};

}  // namespace

void flash_backward_cpu(const AttnProblem& p, const BwdBuffers& b) {
  check_problem(p);
  if (p.B == 0) return;
  switch (p.dtype) {
    case DType::f32: Backward<float, float>{p, b}.run(); break;
    case DType::bf16: Backward<bf16, float>{p, b}.run(); break;
    case DType::f64: Backward<double, double>{p, b}.run(); break;
    default: throw std::invalid_argument("attention: the CPU kernel takes float32, bfloat16 or float64");
  }
}

}  // namespace llmcore::attn::LLMCORE_ISA_NS
