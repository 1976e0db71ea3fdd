"""The Python face of llmcore's C++ kernels (``llmcore._C``), one module per kernel concept.

Every call into ``_C`` goes through here: the dtype codes (:mod:`llmcore.ops.dtypes`), the
checks of what a kernel accepts, and the torch wrappers (autograd functions, custom ops)
around raw-pointer entry points. Model code and plugins import from these modules and never
from ``_C`` itself.
"""
