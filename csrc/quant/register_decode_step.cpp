// Python binding of the C++ decode step (quant/decode_step.hpp): llmcore.quant.decode_step
// builds the plan from a model's modules, passing raw addresses of tensors it keeps alive.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <tuple>
#include <vector>

#include "quant/decode_step.hpp"
#include "registers.hpp"

namespace py = pybind11;

namespace llmcore {
namespace {

using quant::Linear;
using quant::LinearPart;
// (qtype, address, nbytes, rows, activations) of one part
using PartSpec = std::tuple<int, std::uintptr_t, int64_t, int64_t, int>;
// (in_features, out_features, bias address or 0, parts)
using LinearSpec = std::tuple<int64_t, int64_t, std::uintptr_t, std::vector<PartSpec>>;

template <class T>
T* at(std::uintptr_t a) {
  return reinterpret_cast<T*>(a);
}

Linear linear_of(const LinearSpec& spec) {
  Linear l;
  l.in = std::get<0>(spec);
  l.out = std::get<1>(spec);
  l.bias = at<const float>(std::get<2>(spec));
  for (const PartSpec& p : std::get<3>(spec)) {
    const int acts = std::get<4>(p);
    if (acts != 0 && acts != 1) throw std::invalid_argument("decode plan: activations must be 0 or 1");
    l.parts.push_back({&quant::type_info(std::get<0>(p)), at<const uint8_t>(std::get<1>(p)),
                       std::get<2>(p), std::get<3>(p), static_cast<quant::Acts>(acts)});
  }
  return l;
}

}  // namespace

void register_decode_step(py::module_& m) {
  py::class_<quant::DecodePlan>(m, "QuantDecodePlan",
                                "One decode step of a quantized Llama-shape model in C++ "
                                "(built by llmcore.quant.decode_step).")
      .def(py::init([](std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t> dims,
                       std::tuple<int64_t, int64_t, int64_t> cache, int emb_type,
                       std::uintptr_t emb, int64_t emb_nbytes, std::uintptr_t cos,
                       std::uintptr_t sin, std::uintptr_t norm_f, float eps_f,
                       const LinearSpec& head) {
             quant::DecodeShape s;
             std::tie(s.dim, s.n_head, s.n_kv_head, s.head_dim, s.vocab) = dims;
             std::tie(s.batch, s.max_len, s.rope_positions) = cache;
             const quant::TypeInfo* t = emb_type < 0 ? nullptr : &quant::type_info(emb_type);
             return new quant::DecodePlan(
                 s, t, t ? at<const uint8_t>(emb) : nullptr, emb_nbytes,
                 t ? nullptr : at<const float>(emb), at<const float>(cos), at<const float>(sin),
                 at<const float>(norm_f), eps_f, linear_of(head));
           }),
           py::arg("dims"), py::arg("cache"), py::arg("emb_type"), py::arg("emb"),
           py::arg("emb_nbytes"), py::arg("cos"), py::arg("sin"), py::arg("norm_f"),
           py::arg("eps_f"), py::arg("head"),
           "dims (dim, n_head, n_kv_head, head_dim, vocab); cache (batch, max_len, "
           "rope_positions); emb_type -1 for a dense float32 table at emb; a linear layer is "
           "(in, out, bias address or 0, [(qtype, address, nbytes, rows, activations)]).")
      .def(
          "add_layer",
          [](quant::DecodePlan& plan, std::uintptr_t norm1, float eps1, const LinearSpec& qkv,
             const LinearSpec& proj, std::uintptr_t norm2, float eps2, const LinearSpec& gate,
             const LinearSpec& up, const LinearSpec& down, std::uintptr_t k_cache,
             std::uintptr_t v_cache) {
            quant::DecodeLayer l;
            l.norm1 = at<const float>(norm1);
            l.eps1 = eps1;
            l.qkv = linear_of(qkv);
            l.proj = linear_of(proj);
            l.norm2 = at<const float>(norm2);
            l.eps2 = eps2;
            l.gate = linear_of(gate);
            l.up = linear_of(up);
            l.down = linear_of(down);
            l.k_cache = at<float>(k_cache);
            l.v_cache = at<float>(v_cache);
            plan.add_layer(std::move(l));
          },
          "Append a layer: norms, linear layers as in the constructor, and the addresses of "
          "its (batch, n_kv_head, max_len, head_dim) float32 key and value caches.")
      .def_property_readonly("layers", &quant::DecodePlan::layers)
      .def(
          "step",
          [](quant::DecodePlan& plan, std::uintptr_t tokens, int64_t rows, int64_t T,
             std::uintptr_t positions, bool shared_positions, int64_t length, std::uintptr_t key_ok,
             int64_t key_ok_stride, std::uintptr_t logits, int threads) {
            if (tokens == 0 || positions == 0 || logits == 0)
              throw std::invalid_argument("decode step: null buffer");
            py::gil_scoped_release release;
            plan.step(at<const int64_t>(tokens), rows, T, at<const int64_t>(positions),
                      shared_positions, length, at<const uint8_t>(key_ok), key_ok_stride,
                      at<float>(logits), threads < 1 ? 1 : threads);
          },
          py::arg("tokens"), py::arg("rows"), py::arg("T"), py::arg("positions"),
          py::arg("shared_positions"),
          py::arg("length"), py::arg("key_ok"), py::arg("key_ok_stride"), py::arg("logits"),
          py::arg("threads"),
          "logits (rows x vocab float32) of the last of T int64 tokens per row (rows x T) at "
          "int64 positions (rows x T, or T shared), writing their keys and values at cache "
          "indices length ..; key_ok 0 or (T = 1) a (rows, stride) bool mask of the keys "
          "each row may see.");
}

}  // namespace llmcore
