// Python bindings of the activation kernels: raw buffer addresses (torch's data_ptr()) of
// contiguous tensors, so the extension needs no torch headers. llmcore.ops.activation
// checks dtypes, devices and layouts before calling.
#include <pybind11/pybind11.h>

#include <cstdint>

#include "activation/gelu.hpp"
#include "registers.hpp"

namespace py = pybind11;

namespace llmcore {

void register_activation(py::module_& m) {
  m.def(
      "gelu_tanh_forward",
      [](int dtype, int64_t n, std::uintptr_t x, std::uintptr_t y, int threads) {
        const auto d = static_cast<activation::DType>(dtype);
        py::gil_scoped_release release;
        activation::gelu_tanh_forward(d, n, reinterpret_cast<const void*>(x),
                                      reinterpret_cast<void*>(y), threads < 1 ? 1 : threads);
      },
      py::arg("dtype"), py::arg("n"), py::arg("x"), py::arg("y"), py::arg("threads"),
      "y = gelu(x) (tanh approximation) over n contiguous float32 (dtype 0) or bfloat16 "
      "(dtype 1) values.");
  m.def(
      "gelu_tanh_backward",
      [](int dtype, int64_t n, std::uintptr_t dy, std::uintptr_t x, std::uintptr_t dx,
         int threads) {
        const auto d = static_cast<activation::DType>(dtype);
        py::gil_scoped_release release;
        activation::gelu_tanh_backward(d, n, reinterpret_cast<const void*>(dy),
                                       reinterpret_cast<const void*>(x),
                                       reinterpret_cast<void*>(dx), threads < 1 ? 1 : threads);
      },
      py::arg("dtype"), py::arg("n"), py::arg("dy"), py::arg("x"), py::arg("dx"),
      py::arg("threads"), "dx = dy * gelu'(x) (tanh approximation), elementwise over n values.");
}

}  // namespace llmcore
