// Python bindings of the native attention kernels.
//
// The binding takes raw buffer addresses (torch's data_ptr()), sizes and element strides,
// so the extension never needs torch headers. The Python wrapper
// (llmcore.ops.attention) checks devices, dtypes and shapes before it
// calls these; here the sizes are checked again and the GIL is released for the work.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <cstdint>
#include <stdexcept>

#include "attention/flash_cpu.hpp"
#include "attention/flash_cuda.hpp"
#include "registers.hpp"

namespace py = pybind11;

namespace llmcore {
namespace {

using Strides = std::array<int64_t, 4>;

attn::Strided strided(std::uintptr_t ptr, const Strides& s, const char* name) {
  if (ptr == 0) throw std::invalid_argument(std::string("attention: null buffer for ") + name);
  attn::Strided t;
  t.data = reinterpret_cast<const void*>(ptr);
  for (int i = 0; i < 4; ++i) t.s[i] = s[static_cast<size_t>(i)];
  return t;
}

attn::AttnProblem problem(int dtype, int64_t B, int64_t H, int64_t Hkv, int64_t Tq, int64_t Tk,
                          int64_t D, double scale, bool causal, int64_t window,
                          std::uintptr_t mask, const Strides& ms, std::uintptr_t kv_lens,
                          int threads) {
  attn::AttnProblem p;
  p.dtype = static_cast<attn::DType>(dtype);
  p.B = B;
  p.H = H;
  p.Hkv = Hkv;
  p.Tq = Tq;
  p.Tk = Tk;
  p.D = D;
  p.scale = scale;
  p.causal = causal;
  p.window = window;
  if (mask != 0) p.mask = strided(mask, ms, "mask");
  p.kv_lens = reinterpret_cast<const int64_t*>(kv_lens);
  p.threads = threads < 1 ? 1 : threads;
  if (dtype < 0 || dtype > 3) throw std::invalid_argument("attention: dtype code must be 0 to 3");
  attn::check_problem(p);
  return p;
}

void forward(int dtype, int64_t B, int64_t H, int64_t Hkv, int64_t Tq, int64_t Tk, int64_t D,
             std::uintptr_t q, const Strides& qs, std::uintptr_t k, const Strides& ks,
             std::uintptr_t v, const Strides& vs, std::uintptr_t o, const Strides& os,
             std::uintptr_t lse, std::uintptr_t mask, const Strides& ms, std::uintptr_t kv_lens,
             double scale, bool causal, int64_t window, int threads, bool cuda,
             std::uintptr_t stream) {
  const attn::AttnProblem p =
      problem(dtype, B, H, Hkv, Tq, Tk, D, scale, causal, window, mask, ms, kv_lens, threads);
  if (B == 0 || Tq == 0) return;
  attn::FwdBuffers b;
  b.q = strided(q, qs, "q");
  b.k = Tk > 0 ? strided(k, ks, "k") : attn::Strided{};
  b.v = Tk > 0 ? strided(v, vs, "v") : attn::Strided{};
  b.o = strided(o, os, "out");
  b.lse = reinterpret_cast<void*>(lse);
  py::gil_scoped_release release;
  if (cuda)
    attn::flash_forward_cuda(p, b, reinterpret_cast<void*>(stream));
  else
    attn::flash_forward_cpu(p, b);
}

void backward(int dtype, int64_t B, int64_t H, int64_t Hkv, int64_t Tq, int64_t Tk, int64_t D,
              std::uintptr_t q, const Strides& qs, std::uintptr_t k, const Strides& ks,
              std::uintptr_t v, const Strides& vs, std::uintptr_t o, const Strides& os,
              std::uintptr_t dout, const Strides& dos, std::uintptr_t lse, std::uintptr_t mask,
              const Strides& ms, std::uintptr_t kv_lens, std::uintptr_t dq, const Strides& dqs,
              std::uintptr_t dk, const Strides& dks, std::uintptr_t dv, const Strides& dvs,
              double scale, bool causal, int64_t window, int threads, bool cuda,
              std::uintptr_t stream) {
  const attn::AttnProblem p =
      problem(dtype, B, H, Hkv, Tq, Tk, D, scale, causal, window, mask, ms, kv_lens, threads);
  if (B == 0 || Tk == 0) return;
  attn::BwdBuffers b;
  b.k = strided(k, ks, "k");
  b.v = strided(v, vs, "v");
  b.dk = strided(dk, dks, "dk");
  b.dv = strided(dv, dvs, "dv");
  if (Tq > 0) {
    b.q = strided(q, qs, "q");
    b.o = strided(o, os, "out");
    b.dout = strided(dout, dos, "grad_out");
    b.dq = strided(dq, dqs, "dq");
    if (lse == 0) throw std::invalid_argument("attention: null buffer for lse");
    b.lse = reinterpret_cast<const void*>(lse);
  }
  py::gil_scoped_release release;
  if (cuda)
    attn::flash_backward_cuda(p, b, reinterpret_cast<void*>(stream));
  else
    attn::flash_backward_cpu(p, b);
}

}  // namespace

void register_attention(py::module_& m) {
  m.attr("has_cuda_attention") = attn::cuda_attention_built();
  m.def("attention_forward", &forward,
        "Flash attention forward over raw buffers: writes out (and lse when its address is not 0).\n"
        "dtype: 0 float32, 1 bfloat16, 2 float64 (CPU); 3 float16 and 1 bfloat16 on CUDA.",
        py::arg("dtype"), py::arg("B"), py::arg("H"), py::arg("Hkv"), py::arg("Tq"), py::arg("Tk"),
        py::arg("D"), py::arg("q"), py::arg("q_strides"), py::arg("k"), py::arg("k_strides"),
        py::arg("v"), py::arg("v_strides"), py::arg("out"), py::arg("out_strides"), py::arg("lse"),
        py::arg("mask"), py::arg("mask_strides"), py::arg("kv_lens"), py::arg("scale"),
        py::arg("causal"), py::arg("window"), py::arg("threads"), py::arg("cuda") = false,
        py::arg("stream") = 0);
  m.def("attention_backward", &backward,
        "Flash attention backward over raw buffers: writes dq, dk, dv from grad_out and lse.",
        py::arg("dtype"), py::arg("B"), py::arg("H"), py::arg("Hkv"), py::arg("Tq"), py::arg("Tk"),
        py::arg("D"), py::arg("q"), py::arg("q_strides"), py::arg("k"), py::arg("k_strides"),
        py::arg("v"), py::arg("v_strides"), py::arg("out"), py::arg("out_strides"),
        py::arg("grad_out"), py::arg("grad_out_strides"), py::arg("lse"), py::arg("mask"),
        py::arg("mask_strides"), py::arg("kv_lens"), py::arg("dq"), py::arg("dq_strides"),
        py::arg("dk"), py::arg("dk_strides"), py::arg("dv"), py::arg("dv_strides"),
        py::arg("scale"), py::arg("causal"), py::arg("window"), py::arg("threads"),
        py::arg("cuda") = false, py::arg("stream") = 0);
}

}  // namespace llmcore
