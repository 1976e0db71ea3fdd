list(APPEND LLMCORE_SOURCES
  csrc/attention/register_attention.cpp
  csrc/attention/flash_cpu_dispatch.cpp
  csrc/attention/flash_cuda_stub.cpp
)
list(APPEND LLMCORE_KERNEL_SOURCES
  csrc/attention/flash_cpu_fwd.cpp
  csrc/attention/flash_cpu_bwd.cpp
)
