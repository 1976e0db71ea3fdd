"""The dtype codes of ``llmcore._C``'s kernels: one table shared by every kernel.

The kernels take raw pointers, so each call says what the memory holds with a small integer.
The codes are the same for every kernel (each kernel's C++ ``DType`` enum has these values);
which dtypes a kernel implements differs per kernel and device, and is listed here too.
"""

from __future__ import annotations

import torch

#: torch dtype -> the code the C++ kernels switch on.
CODES: dict[torch.dtype, int] = {
    torch.float32: 0,
    torch.bfloat16: 1,
    torch.float64: 2,
    torch.float16: 3,
}

#: Dtypes of the fused softmax cross-entropy kernel (CPU).
LOSS_CPU: frozenset[torch.dtype] = frozenset({torch.float32, torch.bfloat16})
#: Dtypes of the GELU kernels (CPU).
ACTIVATION_CPU: frozenset[torch.dtype] = frozenset({torch.float32, torch.bfloat16})
#: Dtypes of the flash attention kernels on CPU and on CUDA.
ATTENTION_CPU: frozenset[torch.dtype] = frozenset({torch.float32, torch.bfloat16, torch.float64})
ATTENTION_CUDA: frozenset[torch.dtype] = frozenset({torch.bfloat16, torch.float16})
