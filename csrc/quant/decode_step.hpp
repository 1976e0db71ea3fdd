// One decode step of a Llama-shape model whose projections are all quantized, in C++: the
// whole layer loop (RMSNorm, q/k/v, rotary positions, the KV-cache write, attention, the
// output projection, the SwiGLU MLP, the final norm and the head) for one new token per row.
//
// llmcore.quant.decode_step builds a DecodePlan from a Transformer's modules and uses it in
// place of the Python step only when the model is exactly this shape (see there); the
// operations and their order are those of llmcore.model.Block with the built-in RMSNorm,
// RotaryPosition and SwiGLU, so the logits are the Python step's, up to float rounding.
// The plan holds raw addresses: the Python side keeps every tensor it points at alive.
#pragma once

#include <cstdint>
#include <vector>

#include "quant/quant.hpp"

namespace llmcore::quant {

// One run of output rows of a linear layer, stored in one block type.
struct LinearPart {
  const TypeInfo* type = nullptr;
  const uint8_t* w = nullptr;
  int64_t nbytes = 0;
  int64_t rows = 0;
  Acts acts = Acts::int8;
};

// y = x W^T (+ bias): the parts' outputs side by side.
struct Linear {
  std::vector<LinearPart> parts;
  int64_t in = 0, out = 0;
  const float* bias = nullptr;  // (out,) or null
};

struct DecodeLayer {
  const float* norm1 = nullptr;  // (dim,)
  float eps1 = 1e-6f;
  Linear qkv;                    // dim -> (n_head + 2 n_kv_head) head_dim: q, then k, then v
  Linear proj;                   // n_head head_dim -> dim
  const float* norm2 = nullptr;
  float eps2 = 1e-6f;
  Linear gate, up, down;         // dim -> hidden, dim -> hidden, hidden -> dim
  float* k_cache = nullptr;      // (batch, n_kv_head, max_len, head_dim), written in place
  float* v_cache = nullptr;
};

struct DecodeShape {
  int64_t dim = 0, n_head = 0, n_kv_head = 0, head_dim = 0, vocab = 0;
  int64_t batch = 0, max_len = 0, rope_positions = 0;
};

class DecodePlan {
 public:
  // The embedding is a quantized table (emb_type set) or a dense float32 one; cos and sin
  // are the rotary tables, (rope_positions, head_dim / 2) each. Throws std::invalid_argument
  // for inconsistent sizes.
  DecodePlan(DecodeShape shape, const TypeInfo* emb_type, const uint8_t* emb, int64_t emb_nbytes,
             const float* emb_dense, const float* cos, const float* sin, const float* norm_f,
             float eps_f, Linear head);

  // Appends a layer; its linear layers' sizes are checked against the shape.
  void add_layer(DecodeLayer layer);

  int64_t layers() const { return static_cast<int64_t>(layers_.size()); }
  const DecodeShape& shape() const { return shape_; }

  // logits (rows x vocab) of the last of T new tokens per row: tokens (rows x T) at
  // positions (rows x T, or T shared by all rows), their keys and values written at cache
  // indices length .. length + T - 1, each attending causally to keys 0 .. its own.
  // key_ok, when not null (T = 1 only), is a (rows, key_ok_stride) bool mask of the keys a
  // row may see. Throws std::out_of_range, before writing anything, for a token, position
  // or length out of range.
  void step(const int64_t* tokens, int64_t rows, int64_t T, const int64_t* positions,
            bool shared_positions, int64_t length, const uint8_t* key_ok, int64_t key_ok_stride,
            float* logits, int threads);

 private:
  void embed(const int64_t* tokens, int64_t rows, float* x) const;
  void attention(const DecodeLayer& l, int64_t rows, int64_t T, int64_t length, bool masked, int threads);

  DecodeShape shape_;
  const TypeInfo* emb_type_;
  const uint8_t* emb_;
  const float* emb_dense_;
  int64_t emb_row_bytes_ = 0;
  const float *cos_, *sin_, *norm_f_;
  float eps_f_;
  Linear head_;
  std::vector<DecodeLayer> layers_;
  // scratch, reused by every step (a plan runs one step at a time)
  std::vector<float> x_, h_, qkv_, y_, gate_, up_, part_, mask_;
};

// y (rows x l.out) = x (rows x l.in) . W^T + bias, through the quant kernels.
void linear_forward(const Linear& l, const float* x, int64_t rows, float* y,
                    std::vector<float>& scratch, int threads);

}  // namespace llmcore::quant
