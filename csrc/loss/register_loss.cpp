// Python bindings of the loss kernels: raw buffer addresses (torch's data_ptr()), sizes and
// strides, so the extension needs no torch headers. llmcore.ops.loss checks dtypes, devices
// and layouts before calling; sizes and targets are checked again here.
#include <pybind11/pybind11.h>

#include <cstdint>

#include "loss/cross_entropy.hpp"
#include "registers.hpp"

namespace py = pybind11;

namespace llmcore {

void register_loss(py::module_& m) {
  m.def(
      "softmax_cross_entropy",
      [](int dtype, int64_t rows, int64_t vocab, std::uintptr_t logits, int64_t ld,
         std::uintptr_t targets, int64_t ignore_index, std::uintptr_t nll, bool grads,
         int threads, float grad_scale) {
        loss::XentProblem p;
        p.dtype = static_cast<loss::DType>(dtype);
        p.rows = rows;
        p.vocab = vocab;
        p.logits = reinterpret_cast<void*>(logits);
        p.ld = ld;
        p.targets = reinterpret_cast<const int64_t*>(targets);
        p.ignore_index = ignore_index;
        p.nll = reinterpret_cast<float*>(nll);
        p.grads = grads;
        p.grad_scale = grad_scale;
        p.threads = threads < 1 ? 1 : threads;
        loss::check_problem(p);
        py::gil_scoped_release release;
        loss::softmax_cross_entropy(p);
      },
      py::arg("dtype"), py::arg("rows"), py::arg("vocab"), py::arg("logits"), py::arg("ld"),
      py::arg("targets"), py::arg("ignore_index"), py::arg("nll"), py::arg("grads"),
      py::arg("threads"), py::arg("grad_scale") = 1.0f,
      "Per-row NLL of the targets into nll (float32); with grads, the logits (float32 or "
      "bfloat16, dtype 0 or 1) are overwritten with (softmax - onehot) * grad_scale. Rows "
      "whose target is ignore_index give 0 and a zero row.");
}

}  // namespace llmcore
