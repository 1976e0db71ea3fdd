// Python bindings of the instruction-set choice: which kernel variant runs.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "isa/isa.hpp"
#include "registers.hpp"

namespace py = pybind11;

namespace llmcore {

void register_isa(py::module_& m) {
  // Pick the level now, so that a bad LLMCORE_ISA fails the import with its message
  // instead of the first kernel call.
  isa::active();
  m.def(
      "isa", [] { return std::string(isa::name(isa::active())); },
      "The instruction-set level the CPU kernels run at: scalar, avx2, avx512 (or native "
      "for a -march=native build).");
  m.def("set_isa", &isa::set, py::arg("name"),
        "Force the kernels' instruction-set level (tests, debugging); ValueError when this "
        "build or CPU lacks it. The environment variable LLMCORE_ISA does the same at import.");
  m.def(
      "isa_levels",
      [] {
        std::vector<std::string> out;
        for (isa::Level l : isa::available()) out.emplace_back(isa::name(l));
        return out;
      },
      "The instruction-set levels this build compiled that this CPU can run, lowest first.");
}

}  // namespace llmcore
