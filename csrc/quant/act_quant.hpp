// 8-bit quantization of one block of activations, shared by both operand layouts
// (int_operands.hpp: blocks of 32; int_operands_k.hpp: blocks of 256):
//   d = max |x_k| / 127 (NaN when a value is inf or NaN), xq_k = round(x_k / d) in
//   [-127, 127] (0 when d is not positive), and the sum of xq_k over each 16 values.
// Every variant computes the same bytes: one correctly rounded division per value, round
// to nearest even, the same clamp. The vector versions exist because the quantization
// runs once per matmul over all of x, and a scalar loop there cost a quarter of a prefill
// matmul's time (measured).
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace llmcore::quant::LLMCORE_ISA_NS {

// N values at v (N a multiple of 16) into q; sums[i] = sum of q[16 i .. 16 i + 15]. Returns d.
template <int N>
inline float quantize_act_block(const float* v, int8_t* q, int32_t* sums) {
  static_assert(N % 16 == 0, "blocks of whole 16-value halves");
#if defined(__AVX512F__)
  const __m512 sign = _mm512_set1_ps(-0.0f), inf = _mm512_set1_ps(std::numeric_limits<float>::infinity());
  __m512 amax = _mm512_setzero_ps();
  __mmask16 finite = 0xFFFF;
  for (int i = 0; i < N; i += 16) {
    const __m512 a = _mm512_andnot_ps(sign, _mm512_loadu_ps(v + i));
    finite &= _mm512_cmp_ps_mask(a, inf, _CMP_LT_OQ);  // false for inf and NaN
    amax = _mm512_max_ps(amax, a);
  }
  const float m = _mm512_reduce_max_ps(amax);
  const float d = finite == 0xFFFF ? m / 127.0f : std::numeric_limits<float>::quiet_NaN();
  const __m512 dv = _mm512_set1_ps(d), lo = _mm512_set1_ps(-127.0f), hi = _mm512_set1_ps(127.0f);
  for (int i = 0; i < N; i += 16) {
    __m512i qi = _mm512_setzero_si512();
    if (d > 0.0f) {
      const __m512 r = _mm512_roundscale_ps(_mm512_div_ps(_mm512_loadu_ps(v + i), dv),
                                            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      qi = _mm512_cvtps_epi32(_mm512_min_ps(hi, _mm512_max_ps(lo, r)));
    }
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + i), _mm512_cvtepi32_epi8(qi));
    sums[i / 16] = _mm512_reduce_add_epi32(qi);
  }
  return d;
#elif defined(__AVX2__)
  const __m256 sign = _mm256_set1_ps(-0.0f), inf = _mm256_set1_ps(std::numeric_limits<float>::infinity());
  __m256 amax = _mm256_setzero_ps();
  int finite = 0xFF;
  for (int i = 0; i < N; i += 8) {
    const __m256 a = _mm256_andnot_ps(sign, _mm256_loadu_ps(v + i));
    finite &= _mm256_movemask_ps(_mm256_cmp_ps(a, inf, _CMP_LT_OQ));
    amax = _mm256_max_ps(amax, a);
  }
  __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
  m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
  m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
  const float d = finite == 0xFF ? _mm_cvtss_f32(m4) / 127.0f : std::numeric_limits<float>::quiet_NaN();
  const __m256 dv = _mm256_set1_ps(d), lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
  for (int i = 0; i < N; i += 16) {
    __m256i a = _mm256_setzero_si256(), b = _mm256_setzero_si256();
    if (d > 0.0f) {
      const auto quant = [&](const float* p) {
        const __m256 r = _mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(p), dv),
                                         _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        return _mm256_cvtps_epi32(_mm256_min_ps(hi, _mm256_max_ps(lo, r)));
      };
      a = quant(v + i);
      b = quant(v + i + 8);
    }
    const __m256i p = _mm256_permute4x64_epi64(_mm256_packs_epi32(a, b), 0xD8);  // 16 int16 in order
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + i),
                     _mm_packs_epi16(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1)));
    __m256i s = _mm256_add_epi32(a, b);
    __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1));
    sums[i / 16] = _mm_cvtsi128_si32(s4);
  }
  return d;
#else
  float amax = 0.0f;
  bool finite = true;
  for (int k = 0; k < N; ++k) {
    const float a = std::fabs(v[k]);
    finite = finite && a < std::numeric_limits<float>::infinity();  // false for NaN too
    amax = a > amax ? a : amax;
  }
  const float d = finite ? amax / 127.0f : std::numeric_limits<float>::quiet_NaN();
  for (int i = 0; i < N; i += 16) {
    int32_t sum = 0;
    for (int k = i; k < i + 16; ++k) {
      float r = d > 0.0f ? std::nearbyint(v[k] / d) : 0.0f;
      r = r > 127.0f ? 127.0f : (r < -127.0f ? -127.0f : r);
      q[k] = static_cast<int8_t>(r);
      sum += q[k];
    }
    sums[i / 16] = sum;
  }
  return d;
#endif
}

}  // namespace llmcore::quant::LLMCORE_ISA_NS
