"""Type stubs of llmcore's native extension module."""

has_openmp: bool
