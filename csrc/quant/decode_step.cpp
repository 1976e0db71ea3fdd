// The C++ decode step of a quantized Llama-shape model (decode_step.hpp).
#include "quant/decode_step.hpp"

#include "attention/flash_cpu.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

namespace llmcore::quant {
namespace {

void check(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument("decode plan: " + what);
}

void check_linear(const Linear& l, int64_t in, int64_t out, const char* name) {
  check(l.in == in && l.out == out, std::string(name) + " is " + std::to_string(l.out) + " x " +
                                        std::to_string(l.in) + ", expected " + std::to_string(out) +
                                        " x " + std::to_string(in));
  int64_t rows = 0;
  for (const LinearPart& p : l.parts) {
    check(p.type != nullptr && p.w != nullptr && p.rows > 0, std::string(name) + ": empty part");
    checked_bytes(*p.type, p.rows, l.in, p.nbytes);
    rows += p.rows;
  }
  check(rows == out, std::string(name) + ": its parts have " + std::to_string(rows) + " rows, not " +
                         std::to_string(out));
}

// out = x / sqrt(mean(x^2) + eps) * w over one row of n values (RMSNorm in float32)
void rms_norm(const float* x, const float* w, float eps, int64_t n, float* out) {
  double ss = 0.0;
  for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  const float r = 1.0f / std::sqrt(static_cast<float>(ss / static_cast<double>(n)) + eps);
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] * r * w[i];
}

// the (i, i + D/2) rotation of one head's values by the tables' row
void rotate(float* v, const float* cos, const float* sin, int64_t half) {
  for (int64_t i = 0; i < half; ++i) {
    const float a = v[i], b = v[i + half];
    v[i] = a * cos[i] - b * sin[i];
    v[i + half] = b * cos[i] + a * sin[i];
  }
}

// Whether a loop over n values is worth splitting over threads.
bool wide(int64_t n, int threads) { return threads > 1 && n >= (int64_t{1} << 15); }

}  // namespace

void linear_forward(const Linear& l, const float* x, int64_t rows, float* y,
                    std::vector<float>& scratch, int threads) {
  if (l.parts.size() == 1) {
    const LinearPart& p = l.parts[0];
    matmul(*p.type, x, rows, l.in, p.w, p.nbytes, p.rows, y, threads, p.acts);
  } else {
    int64_t col = 0;
    for (const LinearPart& p : l.parts) {
      float* dst = y + col;
      if (rows > 1) {  // the part's rows x p.rows block, then into its columns of y
        scratch.resize(static_cast<size_t>(rows * p.rows));
        dst = scratch.data();
      }
      matmul(*p.type, x, rows, l.in, p.w, p.nbytes, p.rows, dst, threads, p.acts);
      if (rows > 1)
        for (int64_t r = 0; r < rows; ++r)
          std::memcpy(y + r * l.out + col, dst + r * p.rows, sizeof(float) * p.rows);
      col += p.rows;
    }
  }
  if (l.bias != nullptr)
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < l.out; ++j) y[r * l.out + j] += l.bias[j];
}

DecodePlan::DecodePlan(DecodeShape shape, const TypeInfo* emb_type, const uint8_t* emb,
                       int64_t emb_nbytes, const float* emb_dense, const float* cos,
                       const float* sin, const float* norm_f, float eps_f, Linear head)
    : shape_(shape), emb_type_(emb_type), emb_(emb), emb_dense_(emb_dense), cos_(cos), sin_(sin),
      norm_f_(norm_f), eps_f_(eps_f), head_(std::move(head)) {
  const DecodeShape& s = shape_;
  check(s.dim > 0 && s.n_head > 0 && s.n_kv_head > 0 && s.head_dim > 0 && s.vocab > 0,
        "sizes must be positive");
  check(s.n_head % s.n_kv_head == 0, "n_head must be a multiple of n_kv_head");
  check(s.head_dim % 2 == 0, "rotary positions need an even head_dim");
  check(s.batch > 0 && s.max_len > 0 && s.rope_positions > 0, "empty cache or rotary table");
  check(cos != nullptr && sin != nullptr && norm_f != nullptr, "null table");
  if (emb_type_ != nullptr) {
    check(emb_ != nullptr, "null embedding");
    checked_bytes(*emb_type_, s.vocab, s.dim, emb_nbytes);
    emb_row_bytes_ = emb_nbytes / s.vocab;
  } else {
    check(emb_dense_ != nullptr, "null embedding");
  }
  check_linear(head_, s.dim, s.vocab, "lm_head");
}

void DecodePlan::add_layer(DecodeLayer l) {
  const DecodeShape& s = shape_;
  const int64_t qkv = (s.n_head + 2 * s.n_kv_head) * s.head_dim;
  check(l.norm1 != nullptr && l.norm2 != nullptr, "null norm weight");
  check(l.k_cache != nullptr && l.v_cache != nullptr, "null cache");
  check_linear(l.qkv, s.dim, qkv, "attn.qkv");
  check_linear(l.proj, s.n_head * s.head_dim, s.dim, "attn.proj");
  const int64_t hidden = l.gate.out;
  check(hidden > 0, "empty mlp");
  check_linear(l.gate, s.dim, hidden, "mlp.gate");
  check_linear(l.up, s.dim, hidden, "mlp.up");
  check_linear(l.down, hidden, s.dim, "mlp.down");
  layers_.push_back(std::move(l));
}

void DecodePlan::embed(const int64_t* tokens, int64_t rows, float* x) const {
  const int64_t C = shape_.dim;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t t = tokens[r];
    if (t < 0 || t >= shape_.vocab)
      throw std::out_of_range("decode step: token " + std::to_string(t) + " outside the vocabulary of " +
                              std::to_string(shape_.vocab));
    if (emb_type_ != nullptr)
      dequantize(*emb_type_, emb_ + t * emb_row_bytes_, emb_row_bytes_, 1, C, x + r * C,
                 OutDType::f32, 1);
    else
      std::memcpy(x + r * C, emb_dense_ + t * C, sizeof(float) * C);
  }
}

// y (R x n_head head_dim) = softmax(q k^T / sqrt(D)) v for T new tokens per row over keys
// 0 .. length + T - 1, causal, by the flash kernel reading q and the cache in place; masked:
// mask_ holds each row's additive key mask (one row of keys, the same for every head).
void DecodePlan::attention(const DecodeLayer& l, int64_t rows, int64_t T, int64_t length, bool masked,
                           int threads) {
  const DecodeShape& s = shape_;
  const int64_t H = s.n_head, Hkv = s.n_kv_head, D = s.head_dim, qkv_w = (H + 2 * Hkv) * D;
  attn::AttnProblem p;
  p.dtype = attn::DType::f32;
  p.B = rows, p.H = H, p.Hkv = Hkv, p.Tq = T, p.Tk = length + T, p.D = D;
  p.scale = 1.0 / std::sqrt(static_cast<double>(D));
  p.causal = true;
  p.threads = threads;
  if (masked) p.mask = {mask_.data(), {p.Tk, 0, 0, 1}};
  attn::FwdBuffers b;
  b.q = {qkv_.data(), {T * qkv_w, D, qkv_w, 1}};
  b.k = {l.k_cache, {Hkv * s.max_len * D, s.max_len * D, D, 1}};
  b.v = {l.v_cache, {Hkv * s.max_len * D, s.max_len * D, D, 1}};
  b.o = {y_.data(), {T * H * D, D, H * D, 1}};
  attn::check_problem(p);
  attn::flash_forward_cpu(p, b);
}

void DecodePlan::step(const int64_t* tokens, int64_t rows, int64_t T, const int64_t* positions,
                      bool shared_positions, int64_t length, const uint8_t* key_ok,
                      int64_t key_ok_stride, float* logits, int threads) {
  const DecodeShape& s = shape_;
  if (rows < 1 || rows > s.batch)
    throw std::out_of_range("decode step: " + std::to_string(rows) + " rows for a cache of " +
                            std::to_string(s.batch));
  if (T < 1) throw std::out_of_range("decode step: no tokens");
  if (length < 0 || length + T > s.max_len)
    throw std::out_of_range("KV cache overflow: " + std::to_string(length + T) + " positions > max_len " +
                            std::to_string(s.max_len));
  if (key_ok != nullptr && (T != 1 || key_ok_stride < length + 1))
    throw std::out_of_range("decode step: a key mask needs one token per row and a key per position");
  for (int64_t i = 0; i < (shared_positions ? T : rows * T); ++i)
    if (positions[i] < 0 || positions[i] >= s.rope_positions)
      throw std::out_of_range("decode step: position " + std::to_string(positions[i]) +
                              " outside the rotary table of " + std::to_string(s.rope_positions));
  const int64_t C = s.dim, H = s.n_head, Hkv = s.n_kv_head, D = s.head_dim, half = D / 2;
  const int64_t qkv_w = (H + 2 * Hkv) * D, R = rows * T;  // R token rows, row-major (row, t)
  x_.resize(static_cast<size_t>(R * C));
  h_.resize(static_cast<size_t>(R * C));
  qkv_.resize(static_cast<size_t>(R * qkv_w));
  y_.resize(static_cast<size_t>(R * H * D));
  embed(tokens, R, x_.data());
  if (key_ok != nullptr) {  // the flash kernel's additive form, built once for every layer
    mask_.resize(static_cast<size_t>(rows * (length + 1)));
    for (int64_t b = 0; b < rows; ++b)
      for (int64_t j = 0; j <= length; ++j)
        mask_[b * (length + 1) + j] = key_ok[b * key_ok_stride + j] ? 0.0f : -INFINITY;
  }
  float *x = x_.data(), *h = h_.data(), *qkv = qkv_.data();
  for (const DecodeLayer& l : layers_) {
#ifdef LLMCORE_OPENMP
#pragma omp parallel for num_threads(threads) if (wide(R * C, threads))
#endif
    for (int64_t r = 0; r < R; ++r) rms_norm(x + r * C, l.norm1, l.eps1, C, h + r * C);
    linear_forward(l.qkv, h, R, qkv, part_, threads);
#ifdef LLMCORE_OPENMP
#pragma omp parallel for num_threads(threads) if (wide(R * qkv_w, threads))
#endif
    for (int64_t r = 0; r < R; ++r) {
      const int64_t b = r / T, t = r % T, p = positions[shared_positions ? t : r];
      float* q = qkv + r * qkv_w;
      for (int64_t i = 0; i < H + Hkv; ++i) rotate(q + i * D, cos_ + p * half, sin_ + p * half, half);
      for (int64_t g = 0; g < Hkv; ++g) {  // the new keys and values into the cache
        const int64_t at = ((b * Hkv + g) * s.max_len + length + t) * D;
        std::memcpy(l.k_cache + at, q + (H + g) * D, sizeof(float) * D);
        std::memcpy(l.v_cache + at, q + (H + Hkv + g) * D, sizeof(float) * D);
      }
    }
    attention(l, rows, T, length, key_ok != nullptr, threads);
    linear_forward(l.proj, y_.data(), R, h, part_, threads);
    for (int64_t i = 0; i < R * C; ++i) x[i] += h[i];
#ifdef LLMCORE_OPENMP
#pragma omp parallel for num_threads(threads) if (wide(R * C, threads))
#endif
    for (int64_t r = 0; r < R; ++r) rms_norm(x + r * C, l.norm2, l.eps2, C, h + r * C);
    const int64_t F = l.gate.out;
    gate_.resize(static_cast<size_t>(R * F));
    up_.resize(static_cast<size_t>(R * F));
    float *g = gate_.data(), *u = up_.data();
    linear_forward(l.gate, h, R, g, part_, threads);
    linear_forward(l.up, h, R, u, part_, threads);
#ifdef LLMCORE_OPENMP
#pragma omp parallel for num_threads(threads) if (wide(R * F, threads))
#endif
    for (int64_t i = 0; i < R * F; ++i) g[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];  // silu(gate) * up
    linear_forward(l.down, g, R, h, part_, threads);
    for (int64_t i = 0; i < R * C; ++i) x[i] += h[i];
  }
  for (int64_t b = 0; b < rows; ++b)  // the head reads each row's last token only
    rms_norm(x + (b * T + T - 1) * C, norm_f_, eps_f_, C, h + b * C);
  linear_forward(head_, h, rows, logits, part_, threads);
}

}  // namespace llmcore::quant
