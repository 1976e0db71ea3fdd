"""The Python face of llmcore._C: one module per C++ concept."""
