// Building blocks shared by the CPU forward and backward kernels: a register-blocked tile
// product, and the position masks of one score tile.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "flash_cpu.hpp"
#include "simd.hpp"

#ifndef LLMCORE_ISA_NS
#error "compiled once per instruction-set variant: the build defines LLMCORE_ISA_NS (csrc/isa/isa.hpp)"
#endif

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"

// The inline helpers of one instruction-set variant (see csrc/isa/isa.hpp).
namespace llmcore::attn::LLMCORE_ISA_NS {

// C[MR x NV*L] += sum_k A(r, k) * Bm[k][:], with A(r, k) = a[r * ars + k * aks] broadcast
// and Bm rows of NV full vectors. The accumulators stay in registers for the whole k loop.
template <class T, int MR, int NV>
inline void micro_tile(int64_t K, const T* a, int64_t ars, int64_t aks, const T* b, int64_t ldb,
                       T* c, int64_t ldc) {
  constexpr int L = Simd<T>::L;
  Vec<T> acc[MR][NV];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int n = 0; n < NV; ++n) acc[r][n] = vload(c + r * ldc + n * L);
  for (int64_t k = 0; k < K; ++k) {
    Vec<T> bv[NV];
#pragma GCC unroll 4
    for (int n = 0; n < NV; ++n) bv[n] = vload(b + k * ldb + n * L);
    const T* ak = a + k * aks;
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const Vec<T> av = vset(ak[r * ars]);
#pragma GCC unroll 4
      for (int n = 0; n < NV; ++n) acc[r][n] += av * bv[n];
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int n = 0; n < NV; ++n) vstore(c + r * ldc + n * L, acc[r][n]);
}

template <class T, int MR>
inline void micro_row(int64_t N, int64_t K, const T* a, int64_t ars, int64_t aks, const T* b,
                      int64_t ldb, T* c, int64_t ldc) {
  constexpr int L = Simd<T>::L;
  int64_t n = 0;
  if constexpr (MR == 1)  // a single row: cover more columns per pass over K
    for (; n + 4 * L <= N; n += 4 * L) micro_tile<T, 1, 4>(K, a, ars, aks, b + n, ldb, c + n, ldc);
  for (; n + 2 * L <= N; n += 2 * L) micro_tile<T, MR, 2>(K, a, ars, aks, b + n, ldb, c + n, ldc);
  if (n < N) micro_tile<T, MR, 1>(K, a, ars, aks, b + n, ldb, c + n, ldc);
}

// C (M x N) += A (M x K) * Bm (K x N); N is a multiple of the vector width, A is read
// through strides (ars between rows, aks along k), so transposed operands need no copy.
template <class T>
inline void gemm_acc(int64_t M, int64_t N, int64_t K, const T* a, int64_t ars, int64_t aks,
                     const T* b, int64_t ldb, T* c, int64_t ldc) {
  // 8 rows x 2 vectors = 16 accumulators: enough independent FMA chains to hide latency,
  // and tile sizes (64) and common head dims (32..256) are multiples of 8.
  constexpr int MR = 8;
  int64_t m = 0;
  for (; m + MR <= M; m += MR) micro_row<T, MR>(N, K, a + m * ars, ars, aks, b, ldb, c + m * ldc, ldc);
  for (; m + 4 <= M; m += 4) micro_row<T, 4>(N, K, a + m * ars, ars, aks, b, ldb, c + m * ldc, ldc);
  for (; m < M; ++m) micro_row<T, 1>(N, K, a + m * ars, ars, aks, b, ldb, c + m * ldc, ldc);
}

// Threads for a call: small problems run on the calling thread, since waking a team
// costs more than the work (and much more when the cores are shared).
inline int thread_count(const AttnProblem& p, int64_t ntasks) {
  const int64_t work = p.B * p.H * std::max<int64_t>(p.Tq, 1) * std::max<int64_t>(p.Tk, 1) * p.D;
  if (work < (int64_t{1} << 18)) return 1;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(p.threads, ntasks)));
}

// A zero-initialised array that can only grow (dropping its contents). Used instead of
// std::vector, whose out-of-line members would be weak symbols outside this variant's
// namespace, shared with (and possibly resolved to) another variant's copy.
template <class T>
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(size_t n) { grow(n); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { delete[] data_; }
  void grow(size_t n) {
    if (n <= size_) return;
    T* fresh = new T[n]();
    delete[] data_;
    data_ = fresh;
    size_ = n;
  }
  size_t size() const { return size_; }
  T* data() { return data_; }
  T& operator[](size_t i) { return data_[i]; }

 private:
  T* data_ = nullptr;
  size_t size_ = 0;
};

// Per-thread scratch that outlives the call: no allocation, page faults or trimming on
// the hot path (a decode step is tens of microseconds). It only grows, to the largest
// call's O(T) workspace. Every kernel initialises the parts it reads.
template <class Acc>
inline Acc* thread_scratch(size_t n) {
  thread_local Buffer<Acc> buf;
  buf.grow(n);
  return buf.data();
}

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// Which keys the queries of one batch row may see: positions, causal, window, padding.
struct KeyRange {
  int64_t off;     // Tk - Tq: the position of query i is i + off
  int64_t kvlen;   // keys >= kvlen are padding
  bool causal;
  int64_t window;  // 0 = none

  // Keys [lo, hi) that any query in [i0, i1) may see.
  void keys_for(int64_t i0, int64_t i1, int64_t& lo, int64_t& hi) const {
    hi = kvlen;
    if (causal) hi = std::min(hi, i1 - 1 + off + 1);
    lo = 0;
    if (window > 0) lo = std::max<int64_t>(0, i0 + off - window + 1);
    if (hi < lo) hi = lo;
  }
  // True when some (query, key) pair of the tile is hidden by causal or window.
  bool partial(int64_t i0, int64_t i1, int64_t j0, int64_t j1) const {
    if (causal && j1 - 1 > i0 + off) return true;
    if (window > 0 && j0 <= i1 - 1 + off - window) return true;
    return false;
  }
};

// Apply position masks and the additive mask to a transposed score tile St[jj][ii]
// (keys j0.., queries i0.., row length ld). Hidden scores become -inf.
template <class Acc>
inline void mask_tile(Acc* St, int64_t ld, int64_t nk, int64_t nq, int64_t j0, int64_t i0,
                      const KeyRange& kr, bool positional, const Acc* mask_bh, int64_t ms_i,
                      int64_t ms_j) {
  const Acc ninf = -std::numeric_limits<Acc>::infinity();
  for (int64_t jj = 0; jj < nk; ++jj) {
    Acc* row = St + jj * ld;
    const int64_t j = j0 + jj;
    if (mask_bh != nullptr) {
      const Acc* mj = mask_bh + j * ms_j;
      for (int64_t ii = 0; ii < nq; ++ii) row[ii] += mj[(i0 + ii) * ms_i];
    }
    if (positional) {
      // Query i sees key j iff i >= j - off (causal) and i < j - off + window: hide the
      // queries before and after that range of this key's row.
      int64_t lo = 0, hi = nq;
      if (kr.causal) lo = std::clamp<int64_t>(j - kr.off - i0, 0, nq);
      if (kr.window > 0) hi = std::clamp<int64_t>(j - kr.off + kr.window - i0, 0, nq);
      if (hi < lo) hi = lo;
      std::fill(row, row + lo, ninf);
      std::fill(row + hi, row + nq, ninf);
    }
  }
}

}  // namespace llmcore::attn::LLMCORE_ISA_NS

#pragma GCC diagnostic pop
