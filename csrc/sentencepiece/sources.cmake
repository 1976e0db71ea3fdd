list(APPEND LLMCORE_SOURCES
  csrc/sentencepiece/register_sentencepiece.cpp
  csrc/sentencepiece/normalizer.cpp
  csrc/sentencepiece/model.cpp
  csrc/sentencepiece/bpe.cpp
)
