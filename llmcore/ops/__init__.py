"""The Python face of llmcore's C++ kernels (``llmcore._C``), one module per kernel concept.

Every call into ``_C`` goes through here: the dtype codes (:mod:`llmcore.ops.dtypes`), the
checks of what a kernel accepts, and the torch wrappers (autograd functions, custom ops)
around raw-pointer entry points. Model code and plugins import from these modules and never
from ``_C`` itself.
"""

from typing import Any


def native(part: str, user: str) -> Any:
    """``llmcore._C.<part>``, or a TokenizerError naming ``user`` when the extension is
    missing (a broken build)."""
    from llmcore.errors import TokenizerError

    try:
        from llmcore import _C
    except ImportError as exc:  # pragma: no cover - a broken build
        raise TokenizerError(f"{user} needs the native extension llmcore._C: {exc}") from None
    return getattr(_C, part)
