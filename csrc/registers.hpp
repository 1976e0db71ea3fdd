// Declarations of the per-concept binding functions called by module.cpp.
#pragma once
#include <pybind11/pybind11.h>

namespace llmcore {
void register_isa(pybind11::module_& m);
void register_bpe(pybind11::module_& m);
void register_attention(pybind11::module_& m);
void register_loss(pybind11::module_& m);
void register_activation(pybind11::module_& m);
void register_quant(pybind11::module_& m);
void register_decode_step(pybind11::module_& m);
}  // namespace llmcore
