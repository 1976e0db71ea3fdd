// Forward pass of the CPU flash attention kernel.
//
// Tiles are kept transposed (keys x queries) so that every softmax step (running max,
// exp, row sums, rescaling) is vectorised across queries without horizontal reductions:
//   St (keys x queries)   = K . (scale q)^T
//   Ot (dims x queries)  += V^T . exp(St - m)
// A few queries (decode against a cache) take a row path instead, which reads each key
// and value row once for all query heads that share it.
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

constexpr int64_t kBq = 64;  // queries per tile (a multiple of the vector width)
constexpr int64_t kBk = 64;  // keys per tile
constexpr int64_t kRowPathMaxTq = 8;  // up to this many queries per head use the row path
constexpr int64_t kBkRow = 256;       // keys per block on the row path: long sequential runs

template <class In>
const In* at(const Strided& t, int64_t b, int64_t h, int64_t i) {
  return static_cast<const In*>(t.data) + b * t.s[0] + h * t.s[1] + i * t.s[2];
}

template <class In>
In* at_mut(const Strided& t, int64_t b, int64_t h, int64_t i) {
  return const_cast<In*>(at<In>(t, b, h, i));
}

// Key/value rows [j0, j0 + nk) of head (b, hk) as Acc rows: a pointer into the input when
// it already is Acc with unit dim stride, else a converted copy in `buf`.
template <class In, class Acc>
const Acc* rows(const Strided& t, int64_t b, int64_t hk, int64_t j0, int64_t nk, int64_t D,
                Acc* buf, int64_t& ld) {
  if constexpr (std::is_same_v<In, Acc>) {
    if (t.s[3] == 1) {
      ld = t.s[2];
      return at<In>(t, b, hk, j0);
    }
  }
  for (int64_t jj = 0; jj < nk; ++jj) {
    const In* src = at<In>(t, b, hk, j0 + jj);
    for (int64_t d = 0; d < D; ++d) buf[jj * D + d] = to_acc(src[d * t.s[3]]);
  }
  ld = D;
  return buf;
}

template <class In, class Acc>
struct Forward {
  const AttnProblem& p;
  const FwdBuffers& io;
  using V = Vec<Acc>;
  static constexpr int64_t L = Simd<Acc>::L;
  // Queries per tile: kBq, or fewer (whole vectors) when there are fewer queries, so a
  // short chunk of queries does not pay for a full tile.
  const int64_t bq = std::min(kBq, round_up(p.Tq, L));

  KeyRange range(int64_t b) const {
    int64_t kvlen = p.Tk;
    if (p.kv_lens != nullptr) kvlen = std::clamp<int64_t>(p.kv_lens[b], 0, p.Tk);
    return KeyRange{p.Tk - p.Tq, kvlen, p.causal, p.window};
  }

  const Acc* mask_bh(int64_t b, int64_t h) const {
    if (p.mask.data == nullptr) return nullptr;
    return static_cast<const Acc*>(p.mask.data) + b * p.mask.s[0] + h * p.mask.s[1];
  }

  // One tile of bq queries of head (b, h) against all the keys it may see.
  void tile(int64_t b, int64_t h, int64_t qb, Acc* ws) const {
    const int64_t D = p.D, grp = p.H / p.Hkv, hk = h / grp;
    const int64_t i0 = qb * bq, nq = std::min(bq, p.Tq - i0);
    Acc* Qt = ws;            // D x bq, scaled queries, transposed
    Acc* Ot = Qt + D * bq;         // D x bq
    Acc* St = Ot + D * bq;         // kBk x bq
    Acc* Kc = St + kBk * bq;       // kBk x D
    Acc* Vc = Kc + kBk * D;         // kBk x D
    Acc* m = Vc + kBk * D;          // bq
    Acc* l = m + bq;               // bq
    Acc* alpha = l + bq;           // bq
    const Acc scale = static_cast<Acc>(p.scale);
    const Acc ninf = -std::numeric_limits<Acc>::infinity();

    std::fill(Qt, Qt + D * bq, Acc(0));
    for (int64_t ii = 0; ii < nq; ++ii) {
      const In* src = at<In>(io.q, b, h, i0 + ii);
      for (int64_t d = 0; d < D; ++d) Qt[d * bq + ii] = to_acc(src[d * io.q.s[3]]) * scale;
    }
    std::fill(Ot, Ot + D * bq, Acc(0));
    std::fill(m, m + bq, ninf);
    std::fill(l, l + bq, Acc(0));

    const KeyRange kr = range(b);
    int64_t jlo, jhi;
    kr.keys_for(i0, i0 + nq, jlo, jhi);
    const Acc* mbh = mask_bh(b, h);
    for (int64_t j0 = jlo; j0 < jhi; j0 += kBk) {
      const int64_t nk = std::min(kBk, jhi - j0);
      int64_t ldk, ldv;
      const Acc* K = rows<In, Acc>(io.k, b, hk, j0, nk, D, Kc, ldk);
      const Acc* Vr = rows<In, Acc>(io.v, b, hk, j0, nk, D, Vc, ldv);
      std::fill(St, St + nk * bq, Acc(0));
      gemm_acc<Acc>(nk, bq, D, K, ldk, 1, Qt, bq, St, bq);
      const bool positional = kr.partial(i0, i0 + nq, j0, j0 + nk);
      if (positional || mbh != nullptr)
        mask_tile<Acc>(St, bq, nk, nq, j0, i0, kr, positional, mbh, p.mask.s[2], p.mask.s[3]);
      // Online softmax, vectorised across queries.
      for (int64_t c = 0; c < bq; c += L) {
        const V mold = vload(m + c);
        V mx = mold;
        for (int64_t jj = 0; jj < nk; ++jj) mx = vmax<Acc>(mx, vload(St + jj * bq + c));
        const V muse = mx == vset(ninf) ? V{} : mx;  // all hidden so far: avoid inf - inf
        const V a = vexp(mold - muse);
        V sum{};
        for (int64_t jj = 0; jj < nk; ++jj) {
          const V e = vexp(vload(St + jj * bq + c) - muse);
          vstore(St + jj * bq + c, e);
          sum += e;
        }
        vstore(l + c, vload(l + c) * a + sum);
        vstore(m + c, mx);
        vstore(alpha + c, a);
      }
      for (int64_t d = 0; d < D; ++d)
        for (int64_t c = 0; c < bq; c += L)
          vstore(Ot + d * bq + c, vload(Ot + d * bq + c) * vload(alpha + c));
      gemm_acc<Acc>(D, bq, nk, Vr, 1, ldv, St, bq, Ot, bq);
    }
    Acc* lse = static_cast<Acc*>(io.lse);
    for (int64_t ii = 0; ii < nq; ++ii) {
      In* dst = at_mut<In>(io.o, b, h, i0 + ii);
      const Acc inv = l[ii] > 0 ? Acc(1) / l[ii] : Acc(0);  // a query that sees no key -> 0
      for (int64_t d = 0; d < D; ++d) dst[d * io.o.s[3]] = from_acc<In>(Ot[d * bq + ii] * inv);
      if (lse != nullptr)
        lse[(b * p.H + h) * p.Tq + i0 + ii] = l[ii] > 0 ? m[ii] + std::log(l[ii]) : ninf;
    }
  }

  static Acc dot(const Acc* a, const Acc* b, int64_t n) {
    V acc{};
    int64_t d = 0;
    for (; d + L <= n; d += L) acc += vload(a + d) * vload(b + d);
    Acc s = hsum<Acc>(acc);
    for (; d < n; ++d) s += a[d] * b[d];
    return s;
  }

  // All queries of the heads that share kv head (b, hk), one key block at a time: each
  // key/value row is read from memory once (decode is bound by reading the cache).
  //   S (rows x keys) = q . K^T as dot products; P = online softmax of S;
  //   O (rows x dims) = alpha * O + P . V  (a tile product, vectorised over dims)
  void rows_path(int64_t b, int64_t hk, Acc* ws) const {
    const int64_t D = p.D, grp = p.H / p.Hkv, R = grp * p.Tq;
    const int64_t Dp = round_up(D, L);
    Acc* qs = ws;         // R x Dp
    Acc* o = qs + R * Dp;        // R x Dp
    Acc* Kc = o + R * Dp;        // kBkRow x Dp
    Acc* Vc = Kc + kBkRow * Dp;     // kBkRow x Dp
    Acc* S = Vc + kBkRow * Dp;      // R x kBkRow
    Acc* m = S + R * kBkRow;        // R
    Acc* l = m + R;              // R
    const Acc scale = static_cast<Acc>(p.scale);
    const Acc ninf = -std::numeric_limits<Acc>::infinity();
    std::fill(qs, qs + 2 * R * Dp, Acc(0));
    for (int64_t r = 0; r < R; ++r) {
      const In* src = at<In>(io.q, b, hk * grp + r / p.Tq, r % p.Tq);
      for (int64_t d = 0; d < D; ++d) qs[r * Dp + d] = to_acc(src[d * io.q.s[3]]) * scale;
      m[r] = ninf;
      l[r] = 0;
    }
    // The value rows feed vector loads over dims: pad them when D is not a whole number
    // of vectors.
    const bool pad_v = D % L != 0;
    if (pad_v) std::fill(Vc, Vc + kBkRow * Dp, Acc(0));
    const KeyRange kr = range(b);
    int64_t jlo, jhi;
    kr.keys_for(0, p.Tq, jlo, jhi);
    for (int64_t j0 = jlo; j0 < jhi; j0 += kBkRow) {
      const int64_t nk = std::min(kBkRow, jhi - j0);
      int64_t ldk, ldv;
      const Acc* K = rows<In, Acc>(io.k, b, hk, j0, nk, D, Kc, ldk);
      const Acc* Vr;
      if (pad_v) {
        for (int64_t jj = 0; jj < nk; ++jj) {
          const In* src = at<In>(io.v, b, hk, j0 + jj);
          for (int64_t d = 0; d < D; ++d) Vc[jj * Dp + d] = to_acc(src[d * io.v.s[3]]);
        }
        Vr = Vc;
        ldv = Dp;
      } else {
        Vr = rows<In, Acc>(io.v, b, hk, j0, nk, D, Vc, ldv);
      }
      const bool positional = kr.partial(0, p.Tq, j0, j0 + nk);
      for (int64_t r = 0; r < R; ++r) {
        const int64_t h = hk * grp + r / p.Tq, i = r % p.Tq;
        Acc* s = S + r * kBkRow;
        const Acc* qr = qs + r * Dp;
        for (int64_t jj = 0; jj < nk; ++jj) s[jj] = dot(qr, K + jj * ldk, D);
        const Acc* mbh = mask_bh(b, h);
        if (positional || mbh != nullptr)
          mask_tile<Acc>(s, 1, nk, 1, j0, i, kr, positional, mbh, p.mask.s[2], p.mask.s[3]);
        Acc mx = m[r];
        for (int64_t jj = 0; jj < nk; ++jj) mx = std::max(mx, s[jj]);
        const Acc muse = mx == ninf ? Acc(0) : mx;
        const Acc a = m[r] == ninf ? Acc(0) : std::exp(m[r] - muse);
        V sum{};
        int64_t jj = 0;
        for (; jj + L <= nk; jj += L) {
          const V e = vexp(vload(s + jj) - muse);
          vstore(s + jj, e);
          sum += e;
        }
        Acc tot = hsum<Acc>(sum);
        for (; jj < nk; ++jj) {
          s[jj] = s[jj] == ninf ? Acc(0) : std::exp(s[jj] - muse);
          tot += s[jj];
        }
        l[r] = l[r] * a + tot;
        m[r] = mx;
        Acc* orow = o + r * Dp;
        const V av = vset(a);
        for (int64_t d = 0; d < Dp; d += L) vstore(orow + d, vload(orow + d) * av);
      }
      gemm_acc<Acc>(R, Dp, nk, S, kBkRow, 1, Vr, ldv, o, Dp);
    }
    Acc* lse = static_cast<Acc*>(io.lse);
    for (int64_t r = 0; r < R; ++r) {
      const int64_t h = hk * grp + r / p.Tq, i = r % p.Tq;
      In* dst = at_mut<In>(io.o, b, h, i);
      const Acc inv = l[r] > 0 ? Acc(1) / l[r] : Acc(0);
      for (int64_t d = 0; d < D; ++d) dst[d * io.o.s[3]] = from_acc<In>(o[r * Dp + d] * inv);
      if (lse != nullptr) lse[(b * p.H + h) * p.Tq + i] = l[r] > 0 ? m[r] + std::log(l[r]) : ninf;
    }
  }

  void run() const {
    const int64_t D = p.D;
    const bool row_path = p.Tq <= kRowPathMaxTq;
    const int64_t grp = p.H / p.Hkv, Dp = round_up(D, L);
    const int64_t nqb = (p.Tq + bq - 1) / bq;
    const int64_t ntasks = row_path ? p.B * p.Hkv : p.B * p.H * nqb;
    const size_t ws_size = static_cast<size_t>(
        row_path ? 2 * grp * p.Tq * Dp + 2 * kBkRow * Dp + grp * p.Tq * kBkRow + 2 * grp * p.Tq
                 : 2 * D * bq + kBk * bq + 2 * kBk * D + 3 * bq);
    const int nthreads = thread_count(p, ntasks);
#ifdef LLMCORE_OPENMP
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
#endif
    {
      Acc* ws = thread_scratch<Acc>(ws_size);
#ifdef LLMCORE_OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
      for (int64_t t = 0; t < ntasks; ++t) {
        if (row_path) {
          rows_path(t / p.Hkv, t % p.Hkv, ws);
        } else {
          // Heaviest (last, under causal) query tiles first, for load balance.
          const int64_t qb = nqb - 1 - t % nqb, bh = t / nqb;
          tile(bh / p.H, bh % p.H, qb, ws);
        }
      }
    }
    (void)nthreads;
  }
};

}  // namespace

void flash_forward_cpu(const AttnProblem& p, const FwdBuffers& b) {
  check_problem(p);
  if (p.B == 0 || p.Tq == 0) return;
  switch (p.dtype) {
    case DType::f32: Forward<float, float>{p, b}.run(); break;
    case DType::bf16: Forward<bf16, float>{p, b}.run(); break;
    case DType::f64: Forward<double, double>{p, b}.run(); break;
    default: throw std::invalid_argument("attention: the CPU kernel takes float32, bfloat16 or float64");
  }
}

}  // namespace llmcore::attn::LLMCORE_ISA_NS
