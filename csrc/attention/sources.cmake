list(APPEND LLMCORE_SOURCES
  csrc/attention/register_attention.cpp
)
