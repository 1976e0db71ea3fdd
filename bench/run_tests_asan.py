"""Run tests against a sanitizer build of llmcore._C (not the installed one).

By default the bpe tests; pytest arguments after the build folder run others:

    cmake -S . -B build/asan -G Ninja -DLLMCORE_SANITIZE="address;undefined" -DLLMCORE_CUDA=OFF \
          -Dpybind11_DIR=$(python -m pybind11 --cmakedir) && cmake --build build/asan
    LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libstdc++.so)" \
    ASAN_OPTIONS=detect_leaks=0 \
          python bench/run_tests_asan.py build/asan [pytest args...]

    # e.g. the quant kernels on every instruction-set level, and the other CPU kernels'
    # tests again on the lower levels:
    ... python bench/run_tests_asan.py build/asan -q -p no:cacheprovider \
          tests/test_quant.py tests/test_quant_matmul.py tests/test_isa_kernels.py
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
