list(APPEND LLMCORE_SOURCES
  csrc/activation/register_activation.cpp
  csrc/activation/gelu_dispatch.cpp
)
list(APPEND LLMCORE_KERNEL_SOURCES
  csrc/activation/gelu.cpp
)
