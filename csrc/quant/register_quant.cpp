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
         int64_t N, std::uintptr_t y, int threads) {
        const quant::TypeInfo& t = quant::type_info(qtype);
        quant::checked_bytes(t, N, K, nbytes);
        check_address(x, M * K, "x");
        check_address(w, nbytes, "weight");
        check_address(y, M * N, "y");
        py::gil_scoped_release release;
        quant::matmul(t, ptr<const float>(x), M, K, ptr<const uint8_t>(w), nbytes, N, ptr<float>(y),
                      threads < 1 ? 1 : threads);
      },
      py::arg("qtype"), py::arg("x"), py::arg("M"), py::arg("K"), py::arg("w"), py::arg("nbytes"),
      py::arg("N"), py::arg("y"), py::arg("threads"),
      "y (M x N float32) = x (M x K float32) . W^T for W (N x K) in blocks of qtype.");
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
