// Python bindings of the quant kernels: raw buffer addresses (a memory map, NumPy or torch
// buffer), sizes and GGML type ids; llmcore.ops.quant wraps them. Sizes are checked here
// again, before any byte is read, and the GIL is released for the work.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <tuple>
#include <vector>

#include "quant/quant.hpp"
#include "registers.hpp"

namespace py = pybind11;

namespace llmcore {
namespace {

template <class T>
T* ptr(std::uintptr_t a) {
  return reinterpret_cast<T*>(a);
}

void check_address(std::uintptr_t a, int64_t nbytes, const char* what) {
  if (a == 0 && nbytes > 0) throw std::invalid_argument(std::string("quant: null buffer for ") + what);
}

}  // namespace

void register_quant(py::module_& m) {
  m.def(
      "quant_types",
      [] {
        std::vector<std::tuple<std::string, int, int, int>> out;
        for (const quant::TypeInfo& t : quant::kTypes)
          out.emplace_back(t.name, static_cast<int>(t.type), t.block_elems, t.block_bytes);
        return out;
      },
      "The quantized types: (name, GGML type id, elements per block, bytes per block).");
  m.def(
      "quant_dequantize",
      [](int qtype, std::uintptr_t src, int64_t nbytes, int64_t rows, int64_t cols,
         std::uintptr_t dst, int out_dtype, int threads) {
        const quant::TypeInfo& t = quant::type_info(qtype);
        quant::checked_bytes(t, rows, cols, nbytes);
        check_address(src, nbytes, "blocks");
        check_address(dst, rows * cols, "output");
        py::gil_scoped_release release;
        quant::dequantize(t, ptr<const uint8_t>(src), nbytes, rows, cols, ptr<void>(dst),
                          static_cast<quant::OutDType>(out_dtype), threads < 1 ? 1 : threads);
      },
      py::arg("qtype"), py::arg("src"), py::arg("nbytes"), py::arg("rows"), py::arg("cols"),
      py::arg("dst"), py::arg("out_dtype"), py::arg("threads"),
      "dst (rows x cols, dtype 0 float32 or 1 bfloat16) = the blocks at src; ValueError for "
      "bad sizes or a NaN/inf block scale.");
  m.def(
      "quant_quantize",
      [](int qtype, std::uintptr_t src, int64_t rows, int64_t cols, std::uintptr_t dst,
         int64_t nbytes, int threads) {
        const quant::TypeInfo& t = quant::type_info(qtype);
        quant::checked_bytes(t, rows, cols, nbytes);
        check_address(src, rows * cols, "input");
        check_address(dst, nbytes, "blocks");
        py::gil_scoped_release release;
        quant::quantize(t, ptr<const float>(src), rows, cols, ptr<uint8_t>(dst), nbytes,
                        threads < 1 ? 1 : threads);
      },
      py::arg("qtype"), py::arg("src"), py::arg("rows"), py::arg("cols"), py::arg("dst"),
      py::arg("nbytes"), py::arg("threads"),
      "Blocks at dst = the float32 rows x cols values at src; ValueError for NaN/inf values or "
      "a scale beyond fp16.");
  m.def(
      "quant_matmul",
      [](int qtype, std::uintptr_t x, int64_t M, int64_t K, std::uintptr_t w, int64_t nbytes,
         int64_t N, std::uintptr_t y, int threads, int activations) {
        const quant::TypeInfo& t = quant::type_info(qtype);
        quant::checked_bytes(t, N, K, nbytes);
        if (M < 0) throw std::invalid_argument(std::string(t.name) + ": negative number of input rows");
        if (M > 0 && (K > INT64_MAX / M || N > INT64_MAX / M)) throw std::invalid_argument(std::string(t.name) + ": input too large");
        check_address(x, M * K, "x");
        check_address(w, nbytes, "weight");
        check_address(y, M * N, "y");
        py::gil_scoped_release release;
        quant::matmul(t, ptr<const float>(x), M, K, ptr<const uint8_t>(w), nbytes, N, ptr<float>(y),
                      threads < 1 ? 1 : threads, static_cast<quant::Acts>(activations));
      },
      py::arg("qtype"), py::arg("x"), py::arg("M"), py::arg("K"), py::arg("w"), py::arg("nbytes"),
      py::arg("N"), py::arg("y"), py::arg("threads"), py::arg("activations") = 1,
      "y (M x N float32) = x (M x K float32) . W^T for W (N x K) in blocks of qtype; "
      "activations 1 quantizes x to 8 bits per block of 32 (integer dot products), 0 keeps "
      "it float32 (exact weights, float products).");
  m.def(
      "quant_vnni",
      [](py::object on) {
        if (!on.is_none()) quant::set_vnni(on.cast<bool>());
        return quant::vnni_enabled();
      },
      py::arg("on") = py::none(),
      "Whether the AVX-512 quant kernels use VNNI (vpdpbusd); quant_vnni(False) forces the "
      "AVX-512 BW ones, quant_vnni(True) turns VNNI back on (ValueError without it).");
  m.def("quant_cpu_has_vnni", &quant::cpu_has_vnni, "Whether this CPU has AVX-512 VNNI.");
  m.def(
      "quant_first_bad_scale",
      [](int qtype, std::uintptr_t src, int64_t nbytes, int64_t rows, int64_t cols) {
        const quant::TypeInfo& t = quant::type_info(qtype);
        quant::checked_bytes(t, rows, cols, nbytes);
        check_address(src, nbytes, "blocks");
        py::gil_scoped_release release;
        return quant::first_bad_scale(t, ptr<const uint8_t>(src), nbytes / t.block_bytes);
      },
      py::arg("qtype"), py::arg("src"), py::arg("nbytes"), py::arg("rows"), py::arg("cols"),
      "Index of the first block whose fp16 scale or min is NaN or inf, or -1.");
}

}  // namespace llmcore
