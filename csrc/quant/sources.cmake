list(APPEND LLMCORE_SOURCES
  csrc/quant/register_quant.cpp
  csrc/quant/quant_dispatch.cpp
  csrc/quant/quantize.cpp
  csrc/quant/decode_step.cpp
  csrc/quant/register_decode_step.cpp
)
list(APPEND LLMCORE_KERNEL_SOURCES
  csrc/quant/dequantize.cpp
  csrc/quant/matmul.cpp
  csrc/quant/matmul_int.cpp
  csrc/quant/matmul_vnni.cpp
)
