// The one extension module, llmcore._C. Each concept registers its bindings from its
// own register_<concept>.cpp; this file only wires them together.
#include <pybind11/pybind11.h>

#include "registers.hpp"

PYBIND11_MODULE(_C, m) {
  m.doc() = "llmcore's native core: BPE tokenizer, attention, loss, activation and quant kernels.";
#ifdef LLMCORE_OPENMP
  m.attr("has_openmp") = true;
#else
  m.attr("has_openmp") = false;
#endif
  llmcore::register_isa(m);
  llmcore::register_bpe(m);
  llmcore::register_attention(m);
  llmcore::register_loss(m);
  llmcore::register_activation(m);
  llmcore::register_quant(m);
  llmcore::register_decode_step(m);
}
