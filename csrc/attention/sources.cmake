list(APPEND LLMCORE_SOURCES
  csrc/attention/register_attention.cpp
  csrc/attention/flash_cpu_fwd.cpp
  csrc/attention/flash_cpu_bwd.cpp
  csrc/attention/flash_cuda_stub.cpp
)
