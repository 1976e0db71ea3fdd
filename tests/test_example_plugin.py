"""The example third-party package: installed with pip, listed, and used from a config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "plugins" / "llmcore-example"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """pip-install the example into a private folder and return an environment that sees it."""
    target = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--quiet",
            "--target",
            str(target),
            str(EXAMPLE),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")]),
    }
    return env


def llmcore_cli(env, *args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "llmcore", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=600,
    )


def test_llmcore_plugins_lists_the_example(installed):
    proc = llmcore_cli(installed, "plugins", "--json")
    assert proc.returncode == 0, proc.stderr
    example = next(p for p in json.loads(proc.stdout) if p["name"] == "example")
    assert example["distribution"] == "llmcore-example" and example["version"] == "0.1.0"
    assert example["components"] == {"norm": ["scalenorm"], "sampler": ["epsilon"]}


def test_train_and_generate_with_the_examples_components(installed, tmp_path):
    from tests.conftest import TINY_OVERRIDES

    config = tmp_path / "example.yaml"
    config.write_text(
        "model:\n  norm: scalenorm\n"
        "generate:\n  samplers:\n    - {name: temperature, temperature: 0.9}\n    - {name: epsilon, epsilon: 0.001}\n"
    )
    sets = [a for o in TINY_OVERRIDES for a in ("--set", o)]
    out = tmp_path / "run"
    proc = llmcore_cli(
        installed,
        "train",
        str(config),
        "--preset",
        "shakespeare-char",
        *sets,
        "--out",
        str(out),
        "--no-progress",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "norm:\n    name: scalenorm" in (out / "config.yaml").read_text()
    gen = llmcore_cli(
        installed, "generate", str(out), "--prompt", "KING:", "--max-new-tokens", "10"
    )
    assert gen.returncode == 0, gen.stderr
    assert gen.stdout.startswith("KING:")


def test_without_the_plugin_the_config_names_what_is_missing(tmp_path):
    config = tmp_path / "example.yaml"
    config.write_text("model:\n  norm: scalenorm\n")
    proc = subprocess.run(
        [sys.executable, "-m", "llmcore", "train", str(config), "--preset", "shakespeare-char"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        env={**os.environ, "LLMCORE_PLUGINS": ""},
    )
    assert proc.returncode == 1
    assert (
        "model.norm: unknown norm 'scalenorm'; registered norms: layernorm, rmsnorm" in proc.stderr
    )


def test_example_package_tests_pass(installed):
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests")],
        capture_output=True,
        text=True,
        env=installed,
        cwd=EXAMPLE,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
