// y = x W^T with 8-bit activations, one instruction-set variant (see quant.hpp for the
// error bound). Per call: the rows of x are quantized once into a reusable buffer of the
// calling thread; OpenMP then splits W into panels of kPanel rows, each decoded once per
// call into per-thread scratch (int_operands.hpp) and multiplied by every row of x in
// register tiles of kMR x kNR (int_tile.hpp). Many rows (prefill) thus decode each weight
// block once, and a tile's activation rows stay in L1 across the panel's weight rows.
// Up to 16 rows (decode, batched decode) of the types with fused tiles (int_fused.hpp) on
// AVX-512 skip the panel: the fused tiles read the blocks themselves, as the decoding would
// cost twice the dot products there. More rows of the K-quants take their own operands and
// tiles (int_operands_k.hpp, int_tile_k.hpp) on every variant: activations in blocks of 256,
// one int32 lane per sub-block, one float conversion per sub-block.
// GCC 12 flags the deliberately undefined upper lanes inside its own AVX-512 intrinsics
// (_mm512_broadcast_f32x4, _mm512_cvtepi32_ps, ...) as uninitialised (GCC bug 105593).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <algorithm>
#include <cstdint>
#include <vector>

#include "quant/int_operands.hpp"
#include "quant/quant.hpp"

#define LLMCORE_QUANT_TILE_NS tile_plain
#include "quant/int_fused.hpp"

namespace llmcore::quant::LLMCORE_ISA_NS {

#if defined(__AVX512BW__) && !defined(__AVX512VNNI__)
TileFn vnni_tile_fn(bool signed_weights, int mr, int nr);  // matmul_vnni.cpp
TileKFn vnni_tile_k_fn(QType t, int mr, int nr);
FusedFn vnni_fused_fn(QType t, int mr, int nr);
int vnni_fused_offset(QType t);
#endif

namespace {

constexpr int64_t kPanel = 16;  // weight rows decoded together
constexpr int kMR = tile_plain::kMR, kNR = tile_plain::kNR;
constexpr int kMRk = tile_plain::kMRk, kNRk = tile_plain::kNRk;
// Rows of x up to which the fused tiles run where they exist, and K-quants keep the
// common operands on every variant, so all variants round alike for a given M.
constexpr int64_t kFewRows = 16;

// Buffers that outlive the call and only grow: no allocation on the hot path. Every byte a
// kernel reads is written first (rows, then their zero padding).
struct ActBuffers {
  std::vector<int8_t> xq;
  std::vector<float> xd, xc;
};
struct PanelBuffers {
  std::vector<uint8_t> q;
  std::vector<float> s, o;
};
struct PanelBuffersK {
  std::vector<uint8_t> q;
  std::vector<float> s, o;
};

template <class T>
T* grown(std::vector<T>& v, int64_t n) {
  if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
  return v.data();
}

TileFn choose_tile(bool signed_weights, int mr, int nr) {
#if defined(__AVX512BW__) && !defined(__AVX512VNNI__)
  if (vnni_enabled()) return vnni_tile_fn(signed_weights, mr, nr);
#endif
  return tile_plain::tile_fn(signed_weights, mr, nr);
}

TileKFn choose_tile_k(QType t, int mr, int nr) {
#if defined(__AVX512BW__) && !defined(__AVX512VNNI__)
  if (vnni_enabled()) return vnni_tile_k_fn(t, mr, nr);
#endif
  return tile_plain::tile_k_fn(t, mr, nr);
}

// f(m) for each row of x, split over `threads`.
template <class F>
void for_rows(int64_t M, int threads, const F& f) {
  (void)threads;
#ifdef LLMCORE_OPENMP
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
#endif
  for (int64_t m = 0; m < M; ++m) f(m);
}

// The panel loop of both operand kinds: OpenMP splits W into panels of kPanel rows;
// decode(n0, nr) decodes one into the calling thread's scratch and returns it, then
// tile(panel, m0, mr, n, j, nt) multiplies rows m0.. (mr of them) of x by the panel's rows
// j.. (nt of them), which are W's rows n.., in register tiles of at most MR x NR.
template <int MR, int NR, class Decode, class Tile>
void over_panels(int64_t M, int64_t N, int nthreads, const Decode& decode, const Tile& tile) {
  const int64_t npanels = (N + kPanel - 1) / kPanel;
  (void)nthreads;
#ifdef LLMCORE_OPENMP
#pragma omp parallel for num_threads(nthreads) schedule(static) if (nthreads > 1)
#endif
  for (int64_t p = 0; p < npanels; ++p) {
    const int64_t n0 = p * kPanel, nr = std::min(kPanel, N - n0);
    const auto panel = decode(n0, nr);
    for (int64_t m0 = 0; m0 < M; m0 += MR) {
      const int mr = static_cast<int>(std::min<int64_t>(MR, M - m0));
      for (int64_t j = 0; j < nr; j += NR)
        tile(panel, m0, mr, n0 + j, j, static_cast<int>(std::min<int64_t>(NR, nr - j)));
    }
  }
}

// K-quant weights times more than kFewRows rows of x, with the K-quant operands.
void matmul_int_k(QType t, const float* x, int64_t M, int64_t K, const uint8_t* w, int64_t N,
                  int64_t row_bytes, float* y, int nthreads, int qthreads) {
  const LayoutK lay(K, lane_span(t));
  thread_local ActBuffers act;
  int8_t* xq = grown(act.xq, M * lay.q_ld);
  float* xs = grown(act.xd, M * lay.f_ld);
  float* xc = grown(act.xc, M * lay.f_ld);
  for_rows(M, qthreads, [&](int64_t m) {
    quantize_act_row_k(x + m * K, lay, xq + m * lay.q_ld, xs + m * lay.f_ld, xc + m * lay.f_ld);
  });
  TileKFn fns[kMRk][kNRk];
  for (int mr = 1; mr <= kMRk; ++mr)
    for (int nr = 1; nr <= kNRk; ++nr) fns[mr - 1][nr - 1] = choose_tile_k(t, mr, nr);
  const auto decode = [&](int64_t n0, int64_t nr) {
    thread_local PanelBuffersK pb;
    PanelBuffersK* b = &pb;
    grown(b->q, kPanel * lay.q_ld);
    grown(b->s, kPanel * lay.f_ld);
    grown(b->o, kPanel * lay.f_ld);
    for (int64_t r = 0; r < nr; ++r)
      decode_weight_row_k(t, w + (n0 + r) * row_bytes, lay, b->q.data() + r * lay.q_ld,
                          b->s.data() + r * lay.f_ld, b->o.data() + r * lay.f_ld);
    return b;
  };
  const auto tile = [&](const PanelBuffersK* b, int64_t m0, int mr, int64_t n, int64_t j, int nt) {
    const TileKArgs a{b->q.data() + j * lay.q_ld, b->s.data() + j * lay.f_ld, b->o.data() + j * lay.f_ld,
                      xq + m0 * lay.q_ld, xs + m0 * lay.f_ld, xc + m0 * lay.f_ld,
                      lay.q_ld, lay.f_ld, lay.groups, y + m0 * N + n, N};
    fns[mr - 1][nt - 1](a);
  };
  over_panels<kMRk, kNRk>(M, N, nthreads, decode, tile);
}

#if defined(LLMCORE_QUANT_HAS_FUSED)
// Tiles of up to 4 rows of x times 4 weight rows, read straight from the blocks (nb of them
// per row).
void fused_matmul(QType t, const int8_t* xq, const float* xd, const float* xc, const ActLayout& al,
                  int64_t M, int64_t nb, int64_t row_bytes, const uint8_t* w, int64_t N, float* y,
                  int nthreads) {
  FusedFn fns[4][4];  // [rows of x - 1][weight rows - 1]
  int c;
#if !defined(__AVX512VNNI__)
  if (vnni_enabled()) {
    c = vnni_fused_offset(t);
    for (int mr = 1; mr <= 4; ++mr)
      for (int nr = 1; nr <= 4; ++nr) fns[mr - 1][nr - 1] = vnni_fused_fn(t, mr, nr);
  } else
#endif
  {
    c = tile_plain::fused_offset(t);
    for (int mr = 1; mr <= 4; ++mr)
      for (int nr = 1; nr <= 4; ++nr) fns[mr - 1][nr - 1] = tile_plain::fused_fn(t, mr, nr);
  }
  thread_local std::vector<int32_t> xoff_buf;
  const int64_t ld = al.kp / 4;
  int32_t* xoff = grown(xoff_buf, M * ld);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t i = 0; i < ld; ++i) {
      const int8_t* q = xq + m * al.xq_ld + 4 * i;
      xoff[m * ld + i] = -c * (q[0] + q[1] + q[2] + q[3]);
    }
  // One weight row per tile for a single row of x: one sequential stream per thread reads
  // memory faster than four interleaved ones (measured), and there is no reuse to gain.
  const int64_t tile_rows = M == 1 ? 1 : 4;
  const int64_t ntiles = (N + tile_rows - 1) / tile_rows;
  (void)nthreads;
#ifdef LLMCORE_OPENMP
#pragma omp parallel for num_threads(nthreads) schedule(static) if (nthreads > 1)
#endif
  for (int64_t j = 0; j < ntiles; ++j) {
    const int64_t n0 = tile_rows * j;
    const int nt = static_cast<int>(std::min<int64_t>(tile_rows, N - n0));
    for (int64_t m0 = 0; m0 < M; m0 += 4) {
      const int mr = static_cast<int>(std::min<int64_t>(4, M - m0));
      const FusedArgs a{w + n0 * row_bytes, row_bytes, nb, xq + m0 * al.xq_ld, xd + m0 * al.xd_ld,
                        xoff + m0 * ld, xc + m0 * al.xc_ld, al.xq_ld, al.xd_ld, ld, al.xc_ld,
                        y + m0 * N + n0, N};
      fns[mr - 1][nt - 1](a);
    }
  }
}
#endif

}  // namespace

void matmul_int(QType t, const float* x, int64_t M, int64_t K, const uint8_t* w, int64_t N, float* y,
                int threads) {
  const TypeInfo& info = type_info(static_cast<int>(t));
  const int64_t row_bytes = K / info.block_elems * info.block_bytes;
  const int nthreads = M * N * K < (int64_t{1} << 18) ? 1 : std::max(1, threads);
  const int qthreads = M * K < (int64_t{1} << 15) ? 1 : nthreads;
  if (is_k_quant(t) && M > kFewRows)
    return matmul_int_k(t, x, M, K, w, N, row_bytes, y, nthreads, qthreads);
  const ActLayout al(K);
  const WeightLayout wl(K);
  thread_local ActBuffers act;
  int8_t* xq = grown(act.xq, M * al.xq_ld);
  float* xd = grown(act.xd, M * al.xd_ld);
  float* xc = grown(act.xc, M * al.xc_ld);
  for_rows(M, qthreads, [&](int64_t m) {
    quantize_act_row(x + m * K, K, al, xq + m * al.xq_ld, xd + m * al.xd_ld, xc + m * al.xc_ld);
  });

#if defined(LLMCORE_QUANT_HAS_FUSED)
  if (M <= kFewRows && tile_plain::has_fused(t))
    return fused_matmul(t, xq, xd, xc, al, M, K / info.block_elems, row_bytes, w, N, y, nthreads);
#endif
  const bool signed_weights = t == QType::q8_0;
  TileFn fns[kMR][kNR];
  for (int mr = 1; mr <= kMR; ++mr)
    for (int nr = 1; nr <= kNR; ++nr) fns[mr - 1][nr - 1] = choose_tile(signed_weights, mr, nr);
  const auto decode = [&](int64_t n0, int64_t nr) {
    thread_local PanelBuffers pb;
    PanelBuffers* b = &pb;
    grown(b->q, kPanel * wl.q_ld);
    grown(b->s, kPanel * wl.s_ld);
    grown(b->o, kPanel * wl.s_ld);
    for (int64_t r = 0; r < nr; ++r)
      decode_weight_row(t, w + (n0 + r) * row_bytes, K, wl, b->q.data() + r * wl.q_ld,
                        b->s.data() + r * wl.s_ld, b->o.data() + r * wl.s_ld);
    return b;
  };
  const auto tile = [&](const PanelBuffers* b, int64_t m0, int mr, int64_t n, int64_t j, int nt) {
    const TileArgs a{b->q.data() + j * wl.q_ld, b->s.data() + j * wl.s_ld, b->o.data() + j * wl.s_ld,
                     xq + m0 * al.xq_ld, xd + m0 * al.xd_ld, xc + m0 * al.xc_ld,
                     wl.q_ld, wl.s_ld, al.xq_ld, al.xd_ld, al.xc_ld, al.kp, y + m0 * N + n, N};
    fns[mr - 1][nt - 1](a);
  };
  over_panels<kMR, kNR>(M, N, nthreads, decode, tile);
}

}  // namespace llmcore::quant::LLMCORE_ISA_NS
