"""Choosing the CPU kernels' instruction-set level at run time."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from llmcore import _C

LEVELS = ["scalar", "avx2", "avx512", "native"]


def test_levels_are_ordered_and_the_best_one_runs_by_default():
    levels = _C.isa_levels()
    assert levels, "at least one level must run here"
    assert levels == sorted(levels, key=LEVELS.index)
    if "native" not in levels:
        assert levels[0] == "scalar"  # the baseline variant is always built
    if not os.environ.get("LLMCORE_ISA"):
        assert _C.isa() == levels[-1]


def test_set_isa_switches_and_rejects_unknown_levels():
    before = _C.isa()
    try:
        for level in _C.isa_levels():
            _C.set_isa(level)
            assert _C.isa() == level
        with pytest.raises(ValueError, match="unknown instruction-set level; valid here: "):
            _C.set_isa("avx1024")
    finally:
        _C.set_isa(before)
    assert _C.isa() == before


def test_a_level_this_machine_lacks_is_an_error():
    missing = [level for level in LEVELS if level not in _C.isa_levels()]
    for level in missing:
        with pytest.raises(ValueError, match=f"set_isa={level}: this (CPU|build)"):
            _C.set_isa(level)


def _import_with(env_value: str) -> subprocess.CompletedProcess:
    # Load the extension file alone: the import itself must fail, not a later call.
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('llmcore._C', {_C.__file__!r})\n"
        "mod = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(mod)\n"
        "print(mod.isa())\n"
    )
    env = dict(os.environ, LLMCORE_ISA=env_value)
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )


def test_environment_variable_forces_a_level_or_fails_the_import():
    lowest = _C.isa_levels()[0]
    ok = _import_with(lowest)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == lowest
    bad = _import_with("sse9")
    assert bad.returncode != 0
    assert "LLMCORE_ISA=sse9: unknown instruction-set level" in bad.stderr
