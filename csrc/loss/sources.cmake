list(APPEND LLMCORE_SOURCES
  csrc/loss/register_loss.cpp
  csrc/loss/cross_entropy_dispatch.cpp
)
list(APPEND LLMCORE_KERNEL_SOURCES
  csrc/loss/cross_entropy.cpp
)
