// The integer matmul's register tiles compiled for AVX-512 VNNI (vpdpbusd), inside the
// AVX-512 variant, which itself must run on AVX-512 CPUs without VNNI: matmul_int.cpp
// calls these only when the CPU has VNNI (quant::vnni_enabled). Only this file's own
// functions get the VNNI target (the pragma follows every library header), so no copy of
// a shared inline function compiled for VNNI can stand in for the plain one.
// GCC 12 flags the deliberately undefined upper lanes inside its own AVX-512 intrinsics
// (_mm512_broadcast_f32x4, _mm512_cvtepi32_ps, ...) as uninitialised (GCC bug 105593).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <cstdint>
#include <cstring>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "quant/int_operands.hpp"
#include "quant/int_operands_k.hpp"  // before the target pragma: its functions stay plain

#if defined(__AVX512BW__) && !defined(__AVX512VNNI__)
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512vnni"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512vnni")
#endif
#define LLMCORE_QUANT_FORCE_VNNI 1
#define LLMCORE_QUANT_TILE_NS tile_vnni
#include "quant/int_fused.hpp"

namespace llmcore::quant::LLMCORE_ISA_NS {
TileFn vnni_tile_fn(bool signed_weights, int mr, int nr) {
  return tile_vnni::tile_fn(signed_weights, mr, nr);
}
TileKFn vnni_tile_k_fn(QType t, int mr, int nr) { return tile_vnni::tile_k_fn(t, mr, nr); }
FusedFn vnni_fused_fn(QType t, int mr, int nr) { return tile_vnni::fused_fn(t, mr, nr); }
int vnni_fused_offset(QType t) { return tile_vnni::fused_offset(t); }
}  // namespace llmcore::quant::LLMCORE_ISA_NS

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif
