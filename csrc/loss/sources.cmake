list(APPEND LLMCORE_SOURCES
  csrc/loss/register_loss.cpp
  csrc/loss/cross_entropy.cpp
)
