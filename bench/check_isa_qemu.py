"""Run each CPU kernel of llmcore._C on emulated older CPUs (no AVX-512, no AVX2).

    apt-get install -y qemu-user
    python bench/check_isa_qemu.py            # Nehalem (SSE4.2) and Haswell (AVX2)
    python bench/check_isa_qemu.py Nehalem    # one model

For each CPU model, starts this interpreter under ``qemu-x86_64 -cpu MODEL`` and runs tiny
instances of every kernel (attention forward/backward, cross-entropy, GELU, and the quant
kernels when built) against torch references, printing the level ``_C.isa()`` chose there.
An instruction the emulated CPU lacks ends the child with SIGILL. Emulation is slow:
sizes are tiny on purpose.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

CHILD = r"""
import math, torch
from llmcore import _C
print("isa", _C.isa(), "levels", _C.isa_levels(), flush=True)
torch.manual_seed(0)
B, H, T, D = 1, 2, 9, 16
st = (H * T * D, T * D, D, 1)
def attention(q, k, v, code):
    out, lse = torch.empty_like(q), torch.empty(B, H, T, dtype=q.dtype)
    _C.attention_forward(code, B, H, H, T, T, D, q.data_ptr(), st, k.data_ptr(), st,
        v.data_ptr(), st, out.data_ptr(), st, lse.data_ptr(), 0, (0, 0, 0, 0), 0, 0.25,
        True, 0, 1)
    return out, lse
q, k, v = (torch.randn(B, H, T, D, dtype=torch.float64, requires_grad=True) for _ in range(3))
s = (q @ k.transpose(-1, -2)) * 0.25
s = s.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), -math.inf)
ref = torch.softmax(s, -1) @ v
out, _ = attention(q.detach().float(), k.detach().float(), v.detach().float(), 0)
assert torch.allclose(out.double(), ref, atol=1e-5), "attention forward"
out64, lse = attention(q.detach(), k.detach(), v.detach(), 2)
g = torch.randn_like(out64)
grads = [torch.empty_like(out64) for _ in range(3)]
_C.attention_backward(2, B, H, H, T, T, D, q.data_ptr(), st, k.data_ptr(), st, v.data_ptr(), st,
    out64.data_ptr(), st, g.data_ptr(), st, lse.data_ptr(), 0, (0, 0, 0, 0), 0,
    grads[0].data_ptr(), st, grads[1].data_ptr(), st, grads[2].data_ptr(), st, 0.25, True, 0, 1)
expected = torch.autograd.grad(ref, (q, k, v), g)
assert all(torch.allclose(a, b, atol=1e-10) for a, b in zip(grads, expected)), "attention backward"
print("attention ok", flush=True)
logits = torch.randn(5, 37)
targets = torch.randint(0, 37, (5,))
nll = torch.empty(5)
_C.softmax_cross_entropy(0, 5, 37, logits.data_ptr(), 37, targets.data_ptr(), -100, nll.data_ptr(), False, 1)
assert torch.allclose(nll, torch.nn.functional.cross_entropy(logits, targets, reduction="none"), atol=1e-5), "cross entropy"
print("cross entropy ok", flush=True)
x = torch.randn(101)
y = torch.empty_like(x)
_C.gelu_tanh_forward(0, 101, x.data_ptr(), y.data_ptr(), 1)
ref = torch.nn.functional.gelu(x.double(), approximate="tanh").float()
assert torch.allclose(y, ref, atol=1e-6), "gelu"
print("gelu ok", flush=True)
if hasattr(_C, "quant_matmul"):
    from llmcore.ops import quant
    w = torch.randn(7, 256)
    x = torch.randn(3, 256)
    for qtype in ("q8_0", "q4_0", "q4_k"):
        raw = quant.quantize(qtype, w)
        wd = quant.dequantize(qtype, raw, (7, 256)).double()
        ref = x.double() @ wd.T
        y = quant.matmul(x, qtype, raw, (7, 256), activations="float32")
        assert torch.allclose(y.double(), ref, atol=1e-3), qtype
        # 8-bit activations: each within half a step, max |x| / 254 per block of 32
        step = (x.abs().reshape(3, 8, 32).amax(-1).double() / 254).repeat_interleave(32, 1)
        y8 = quant.matmul(x, qtype, raw, (7, 256))
        assert torch.all((y8.double() - ref).abs() <= step @ wd.abs().T * 1.001 + 1e-4), qtype
    # more than 16 rows of a K-quant: the many-row tiles, activations in blocks of 256,
    # 3 super-blocks (a group of 512 half padded)
    w, x = torch.randn(5, 768), torch.randn(20, 768)
    raw = quant.quantize("q4_k", w)
    wd = quant.dequantize("q4_k", raw, (5, 768)).double()
    ref = x.double() @ wd.T
    step = (x.abs().reshape(20, 3, 256).amax(-1).double() / 254).repeat_interleave(256, 1)
    y8 = quant.matmul(x, "q4_k", raw, (5, 768))
    assert torch.all((y8.double() - ref).abs() <= step @ wd.abs().T * 1.001 + 1e-4), "q4_k rows"
    print("quant ok", flush=True)
print("ALL OK", flush=True)
"""


def main(models: list[str]) -> int:
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        print("qemu-x86_64 not found: apt-get install -y qemu-user")
        return 2
    failed = 0
    for model in models:
        print(f"--- qemu-x86_64 -cpu {model}", flush=True)
        proc = subprocess.run([qemu, "-cpu", model, sys.executable, "-c", CHILD], timeout=3600)
        if proc.returncode != 0:
            print(f"FAILED on {model}: exit code {proc.returncode}")
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["Nehalem", "Haswell"]))
