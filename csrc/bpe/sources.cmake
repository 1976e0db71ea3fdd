list(APPEND LLMCORE_SOURCES
  csrc/bpe/register_bpe.cpp
)
