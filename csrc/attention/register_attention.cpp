// Python bindings of the native attention kernels.
#include "registers.hpp"

namespace llmcore {
void register_attention(pybind11::module_& m) { (void)m; }
}  // namespace llmcore
