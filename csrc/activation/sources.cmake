list(APPEND LLMCORE_SOURCES
  csrc/activation/register_activation.cpp
  csrc/activation/gelu.cpp
)
