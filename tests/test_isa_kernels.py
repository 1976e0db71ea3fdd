"""The CPU kernels' tests re-run on every other instruction-set level this CPU has.

The kernel test modules run at the level picked at import (the best one); this module
imports a representative subset of their tests and runs it again with the level forced to
each lower one -- the scalar baseline always among them -- against the same references.
"""

from __future__ import annotations

import pytest

from llmcore import _C
from tests.test_activations import test_forward_and_backward_match_the_formula
from tests.test_cross_entropy_kernel import (
    test_matches_torch,
    test_nan_logits_give_nan_loss,
    test_strided_rows_and_extreme_values,
)
from tests.test_native_attention import (
    test_bfloat16_matches_reference,
    test_float32_matches_reference,
    test_float64_matches_reference,
    test_masks_and_window,
    test_padding_lengths_and_rows_that_see_nothing,
    test_strided_inputs_and_scale,
)

DEFAULT = _C.isa()
OTHER_LEVELS = [level for level in _C.isa_levels() if level != DEFAULT]

__all__ = [
    "test_bfloat16_matches_reference",
    "test_float32_matches_reference",
    "test_float64_matches_reference",
    "test_forward_and_backward_match_the_formula",
    "test_masks_and_window",
    "test_matches_torch",
    "test_nan_logits_give_nan_loss",
    "test_padding_lengths_and_rows_that_see_nothing",
    "test_strided_inputs_and_scale",
    "test_strided_rows_and_extreme_values",
]


@pytest.fixture(autouse=True, params=OTHER_LEVELS)
def isa_level(request):
    """Run the test with the kernels forced to one level, then restore the default."""
    _C.set_isa(request.param)
    try:
        yield request.param
    finally:
        _C.set_isa(DEFAULT)
