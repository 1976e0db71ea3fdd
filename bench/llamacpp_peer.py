"""The llama.cpp peer, in a venv of its own that this script creates.

llama.cpp is the peer of the GGUF, quantization and server benchmarks. It reaches them
through the ``llama-cpp-python`` package, which pip builds from source (a few minutes on
2 cores). It is never a dependency of llmcore: it lives in ``bench/.venv-llamacpp``
(ignored by git; ``LLMCORE_PEER_VENV`` names another place), built once and reused.

    python bench/llamacpp_peer.py            # build it if missing, print its python
    python bench/llamacpp_peer.py --check F  # load GGUF file F in llama.cpp, print its shape

Other bench scripts import ``peer_python()`` and run their llama.cpp half in that
interpreter, so both engines run side by side in one bench run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEER_VENV = Path(os.environ.get("LLMCORE_PEER_VENV", ROOT / "bench" / ".venv-llamacpp"))
PACKAGE = "llama-cpp-python[server]==0.3.36"


def peer_python(build: bool = True) -> Path:
    """The python of the llama.cpp venv, building the venv first if it is missing."""
    python = PEER_VENV / "bin" / "python"
    if python.exists() and _imports(python):
        return python
    if not build:
        raise SystemExit(f"no llama.cpp peer at {PEER_VENV}: run python bench/llamacpp_peer.py")
    print(f"building {PACKAGE} into {PEER_VENV} (a few minutes) ...", file=sys.stderr)
    venv.EnvBuilder(with_pip=True, clear=True).create(PEER_VENV)
    env = dict(os.environ)
    # The peer is built the way its users build it on their own machine: native code.
    env.setdefault("CMAKE_ARGS", "-DGGML_NATIVE=ON -DLLAMA_CURL=OFF")
    env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
    pip = [str(python), "-m", "pip", "install", "--no-cache-dir", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "numpy", "--only-binary", ":all:"], check=True)
    subprocess.run([*pip, PACKAGE, "--no-binary", "llama-cpp-python"], check=True, env=env)
    if not _imports(python):
        raise SystemExit(f"{PACKAGE} built but does not import in {PEER_VENV}")
    return python


def _imports(python: Path) -> bool:
    r = subprocess.run([str(python), "-c", "import llama_cpp"], capture_output=True)
    return r.returncode == 0


CHECK = r"""
import json, sys
import llama_cpp
import llama_cpp.llama_cpp as C
_default = C.llama_model_default_params
def _params():  # AMX repacking segfaults in 0.3.36 on some CPUs: keep it off
    p = _default()
    p.use_extra_bufts = False
    return p
C.llama_model_default_params = llama_cpp.llama_model_default_params = _params
llm = llama_cpp.Llama(sys.argv[1], n_ctx=64, n_threads=2, verbose=False)
ids = llm.tokenize(b"Hello world", add_bos=False, special=False)
out = llm.create_completion("Hello", max_tokens=4, temperature=0.0)
print(json.dumps({"n_vocab": llm.n_vocab(), "n_ctx": llm.n_ctx(),
                  "n_embd": llm.n_embd(), "ids": ids, "text": out["choices"][0]["text"]}))
"""


def check_file(path: Path) -> dict:
    """Load ``path`` in llama.cpp and greedy-complete four tokens; returns what it saw."""
    import json

    r = subprocess.run([str(peer_python()), "-c", CHECK, str(path)], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"llama.cpp could not load {path}:\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", type=Path, help="a GGUF file to load in llama.cpp")
    args = ap.parse_args()
    python = peer_python()
    print(python)
    if args.check:
        print(check_file(args.check))


if __name__ == "__main__":
    main()
