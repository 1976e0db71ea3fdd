list(APPEND LLMCORE_SOURCES
  csrc/bpe/register_bpe.cpp
  csrc/bpe/core.cpp
  csrc/bpe/encode.cpp
  csrc/bpe/train.cpp
  csrc/bpe/unicode_tables.cpp
)
