"""Importing llmcore makes the OpenMP threads spin only briefly before they sleep while they
wait, unless the user chose: the
OpenMP runtime's own report (``OMP_DISPLAY_ENV``, printed when it loads with torch) shows the
policy it really uses."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

IMPORT = "import llmcore, torch; torch.ones(2) + 1"


def _openmp_report(env_update: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(env_update, OMP_DISPLAY_ENV="VERBOSE")
    proc = subprocess.run(
        [sys.executable, "-c", IMPORT], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    if "OPENMP DISPLAY ENVIRONMENT" not in proc.stderr:
        pytest.skip("torch's OpenMP runtime is not GNU libgomp: it prints no OMP_DISPLAY_ENV")
    return proc.stderr


def test_llmcore_makes_openmp_spin_briefly_then_sleep():
    report = _openmp_report({})
    assert "GOMP_SPINCOUNT = '10000'" in report  # libgomp's own default is 300000


@pytest.mark.parametrize(
    "user, shown",
    [
        ({"OMP_WAIT_POLICY": "ACTIVE"}, "OMP_WAIT_POLICY = 'ACTIVE'"),
        ({"GOMP_SPINCOUNT": "12345"}, "GOMP_SPINCOUNT = '12345'"),
    ],
)
def test_a_policy_the_user_set_is_kept(user, shown):
    report = _openmp_report(user)
    assert shown in report and "GOMP_SPINCOUNT = '10000'" not in report
