"""Run the bpe tests against a sanitizer build of llmcore._C (not the installed one).

    cmake -S . -B build/asan -G Ninja -DLLMCORE_SANITIZE="address;undefined" -DLLMCORE_CUDA=OFF \
          -Dpybind11_DIR=$(python -m pybind11 --cmakedir) && cmake --build build/asan
    LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libstdc++.so)" \
    ASAN_OPTIONS=detect_leaks=0 \
          python bench/run_tests_asan.py build/asan [pytest args...]
"""

from __future__ import annotations

import glob
import importlib.util
import sys

so = glob.glob(f"{sys.argv[1]}/_C*.so")[0]
spec = importlib.util.spec_from_file_location("llmcore._C", so)
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
sys.modules["llmcore._C"] = mod
import llmcore  # noqa: E402

llmcore._C = mod
print(f"llmcore._C from {so}", flush=True)
import pytest  # noqa: E402

sys.exit(
    pytest.main(
        sys.argv[2:]
        or [
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/test_bpe_exact.py",
            "tests/test_bpe_train.py",
            "tests/test_tokenizers_formats.py",
        ]
    )
)
