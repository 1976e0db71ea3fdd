"""The Python face of csrc/: one module per C++ concept."""
