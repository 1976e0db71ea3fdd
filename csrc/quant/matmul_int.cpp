// y = x W^T with 8-bit activations, one instruction-set variant (see quant.hpp for the
// error bound). Per call: the rows of x are quantized once into a reusable buffer of the
// calling thread; OpenMP then splits W into panels of kPanel rows, each decoded once per
// call into per-thread scratch (int_operands.hpp) and multiplied by every row of x in
// register tiles of kMR x kNR (int_tile.hpp). Many rows (prefill) thus decode each weight
// block once, and a tile's activation rows stay in L1 across the panel's weight rows.
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
#include "quant/int_tile.hpp"

namespace llmcore::quant::LLMCORE_ISA_NS {

#if defined(__AVX512BW__) && !defined(__AVX512VNNI__)
TileFn vnni_tile_fn(bool signed_weights, int mr, int nr);  // matmul_vnni.cpp
#endif

namespace {

constexpr int64_t kPanel = 16;  // weight rows decoded together
constexpr int kMR = tile_plain::kMR, kNR = tile_plain::kNR;

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

}  // namespace

void matmul_int(QType t, const float* x, int64_t M, int64_t K, const uint8_t* w, int64_t N, float* y,
                int threads) {
  const TypeInfo& info = type_info(static_cast<int>(t));
  const int64_t row_bytes = K / info.block_elems * info.block_bytes;
  const ActLayout al(K);
  const WeightLayout wl(K);
  thread_local ActBuffers act;
  int8_t* xq = grown(act.xq, M * al.xq_ld);
  float* xd = grown(act.xd, M * al.xd_ld);
  float* xc = grown(act.xc, M * al.xc_ld);
  const int nthreads = M * N * K < (int64_t{1} << 18) ? 1 : std::max(1, threads);
  const int qthreads = M * K < (int64_t{1} << 15) ? 1 : nthreads;
  (void)qthreads;
#ifdef LLMCORE_OPENMP
#pragma omp parallel for num_threads(qthreads) schedule(static) if (qthreads > 1)
#endif
  for (int64_t m = 0; m < M; ++m)
    quantize_act_row(x + m * K, K, al, xq + m * al.xq_ld, xd + m * al.xd_ld, xc + m * al.xc_ld);

  const bool signed_weights = t == QType::q8_0;
  TileFn fns[kMR][kNR];
  for (int mr = 1; mr <= kMR; ++mr)
    for (int nr = 1; nr <= kNR; ++nr) fns[mr - 1][nr - 1] = choose_tile(signed_weights, mr, nr);
  const int64_t npanels = (N + kPanel - 1) / kPanel;
  (void)nthreads;
#ifdef LLMCORE_OPENMP
#pragma omp parallel for num_threads(nthreads) schedule(static) if (nthreads > 1)
#endif
  for (int64_t p = 0; p < npanels; ++p) {
    const int64_t n0 = p * kPanel, nr = std::min(kPanel, N - n0);
    thread_local PanelBuffers pb;
    uint8_t* q = grown(pb.q, kPanel * wl.q_ld);
    float* s = grown(pb.s, kPanel * wl.s_ld);
    float* o = grown(pb.o, kPanel * wl.s_ld);
    for (int64_t r = 0; r < nr; ++r)
      decode_weight_row(t, w + (n0 + r) * row_bytes, K, wl, q + r * wl.q_ld, s + r * wl.s_ld, o + r * wl.s_ld);
    for (int64_t m0 = 0; m0 < M; m0 += kMR) {
      const int mr = static_cast<int>(std::min<int64_t>(kMR, M - m0));
      for (int64_t j = 0; j < nr; j += kNR) {
        const int nt = static_cast<int>(std::min<int64_t>(kNR, nr - j));
        const TileArgs a{q + j * wl.q_ld, s + j * wl.s_ld, o + j * wl.s_ld,
                         xq + m0 * al.xq_ld, xd + m0 * al.xd_ld, xc + m0 * al.xc_ld,
                         wl.q_ld, wl.s_ld, al.xq_ld, al.xd_ld, al.xc_ld, al.kp,
                         y + m0 * N + n0 + j, N};
        fns[mr - 1][nt - 1](a);
      }
    }
  }
}

}  // namespace llmcore::quant::LLMCORE_ISA_NS
