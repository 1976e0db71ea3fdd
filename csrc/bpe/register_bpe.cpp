// Python bindings of the byte-level BPE tokenizer.
#include "registers.hpp"

namespace llmcore {
void register_bpe(pybind11::module_& m) { (void)m; }
}  // namespace llmcore
