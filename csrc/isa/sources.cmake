list(APPEND LLMCORE_SOURCES
  csrc/isa/register_isa.cpp
  csrc/isa/isa.cpp
)
