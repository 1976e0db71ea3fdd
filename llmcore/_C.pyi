"""Type stubs of llmcore's native extension module."""

has_openmp: bool

# --- instruction-set levels of the CPU kernels (csrc/isa) -------------------------------
# The kernels are compiled per level and the best one this CPU has runs; the environment
# variable LLMCORE_ISA (read once, at import) or set_isa forces one. ValueError (ImportError
# at import) for a level that is unknown or that this build or CPU lacks.

def isa() -> str:
    """The level the CPU kernels run at: scalar, avx2, avx512 (native for -march=native)."""

def set_isa(name: str) -> None:
    """Force the kernels' level (tests, debugging)."""

def isa_levels() -> list[str]:
    """The levels this build compiled that this CPU can run, lowest first."""

# --- byte-level BPE tokenizer (csrc/bpe) ------------------------------------------------
# The submodule llmcore._C.bpe, wrapped by llmcore.ops.bpe. Written as a
# class because a single stub file cannot declare a submodule. Invalid tokenizer data and
# undecodable ids raise llmcore.errors.TokenizerError.
class bpe:
    unicode_version: str

    class Core:
        def __init__(
            self,
            tokens: list[bytes],
            ranks: list[int],
            ids: list[int],
            specials: list[tuple[str, int]],
            pattern: str,
        ) -> None: ...
        def encode_ordinary(self, text: str) -> list[int]: ...
        def encode_special(self, text: str, allowed: list[bool]) -> list[int]: ...
        def encode_bytes(self, data: bytes) -> list[int]: ...
        def encode_batch(
            self, texts: list[str] | tuple[str, ...], num_threads: int = 0
        ) -> list[list[int]]: ...
        def decode_bytes(self, ids: list[int] | tuple[int, ...]) -> bytes: ...
        def decode(self, ids: list[int] | tuple[int, ...]) -> str: ...
        def token_bytes(self, id: int) -> bytes: ...
        def has_id(self, id: int) -> bool: ...
        @property
        def n_vocab(self) -> int: ...

    @staticmethod
    def split(pattern: str, text: str) -> list[str]: ...
    @staticmethod
    def train(
        texts: list[str],
        files: list[str],
        n_new_tokens: int,
        pattern: str,
        num_threads: int = 0,
        progress: object = None,
    ) -> tuple[list[bytes], list[tuple[int, int]]]: ...

# --- end of BPE tokenizer ---------------------------------------------------------------

# --- attention kernels (csrc/attention) -------------------------------------------------
# Raw-buffer entry points wrapped by llmcore.ops.attention. Addresses are
# data_ptr() integers, strides are element strides of (batch, head, position, dim); dtype
# codes: 0 float32, 1 bfloat16, 2 float64 (CPU), 1 bfloat16 and 3 float16 (CUDA). The mask
# is additive in the accumulation dtype (float64 for float64, else float32); lse is
# (B, H, Tq) in that dtype; window 0 means none. Raise ValueError on bad sizes.

has_cuda_attention: bool

# fmt: off
def attention_forward(
    dtype: int, B: int, H: int, Hkv: int, Tq: int, Tk: int, D: int,
    q: int, q_strides: tuple[int, int, int, int],
    k: int, k_strides: tuple[int, int, int, int],
    v: int, v_strides: tuple[int, int, int, int],
    out: int, out_strides: tuple[int, int, int, int],
    lse: int, mask: int, mask_strides: tuple[int, int, int, int], kv_lens: int,
    scale: float, causal: bool, window: int, threads: int,
    cuda: bool = False, stream: int = 0,
) -> None:
    """Flash attention forward: writes ``out`` (and ``lse`` when its address is not 0)."""

def attention_backward(
    dtype: int, B: int, H: int, Hkv: int, Tq: int, Tk: int, D: int,
    q: int, q_strides: tuple[int, int, int, int],
    k: int, k_strides: tuple[int, int, int, int],
    v: int, v_strides: tuple[int, int, int, int],
    out: int, out_strides: tuple[int, int, int, int],
    grad_out: int, grad_out_strides: tuple[int, int, int, int],
    lse: int, mask: int, mask_strides: tuple[int, int, int, int], kv_lens: int,
    dq: int, dq_strides: tuple[int, int, int, int],
    dk: int, dk_strides: tuple[int, int, int, int],
    dv: int, dv_strides: tuple[int, int, int, int],
    scale: float, causal: bool, window: int, threads: int,
    cuda: bool = False, stream: int = 0,
) -> None:
    """Flash attention backward: writes ``dq``, ``dk``, ``dv`` from ``grad_out`` and ``lse``."""
# fmt: on

# --- quantized blocks (csrc/quant) ------------------------------------------------------
# Raw-buffer entry points wrapped by llmcore.ops.quant. qtype is a GGML type id (2 q4_0,
# 3 q4_1, 6 q5_0, 7 q5_1, 8 q8_0, 12 q4_k, 13 q5_k, 14 q6_k); sizes are checked before any
# byte is read. Raise ValueError on bad sizes, unknown types, NaN/inf block scales (with
# the block index) and, when quantizing, NaN/inf values or scales beyond fp16 (with the row).

# fmt: off
def quant_types() -> list[tuple[str, int, int, int]]:
    """(name, GGML type id, elements per block, bytes per block) of each quantized type."""

def quant_dequantize(
    qtype: int, src: int, nbytes: int, rows: int, cols: int, dst: int, out_dtype: int,
    threads: int,
) -> None:
    """dst (rows x cols; out_dtype 0 float32, 1 bfloat16) = the blocks at src."""

def quant_quantize(
    qtype: int, src: int, rows: int, cols: int, dst: int, nbytes: int, threads: int,
) -> None:
    """Blocks at dst = the float32 rows x cols values at src."""

def quant_matmul(
    qtype: int, x: int, M: int, K: int, w: int, nbytes: int, N: int, y: int, threads: int,
) -> None:
    """y (M x N float32) = x (M x K float32) . W^T, W (N x K) in blocks of qtype."""

def quant_first_bad_scale(qtype: int, src: int, nbytes: int, rows: int, cols: int) -> int:
    """Index of the first block whose fp16 scale or min is NaN or inf, or -1."""
# (in_features, out_features, bias address or 0, [(qtype, address, nbytes, rows, activations)])
_LinearSpec = tuple[int, int, int, list[tuple[int, int, int, int, int]]]

class QuantDecodePlan:
    """One decode step of a quantized Llama-shape model (built by llmcore.quant.decode_step)."""

    def __init__(
        self, dims: tuple[int, int, int, int, int], cache: tuple[int, int, int], emb_type: int,
        emb: int, emb_nbytes: int, cos: int, sin: int, norm_f: int, eps_f: float,
        head: _LinearSpec,
    ) -> None: ...
    def add_layer(
        self, norm1: int, eps1: float, qkv: _LinearSpec, proj: _LinearSpec, norm2: int,
        eps2: float, gate: _LinearSpec, up: _LinearSpec, down: _LinearSpec, k_cache: int,
        v_cache: int,
    ) -> None: ...
    @property
    def layers(self) -> int: ...
    def step(
        self, tokens: int, rows: int, positions: int, shared_position: bool, length: int,
        key_ok: int, key_ok_stride: int, logits: int, threads: int,
    ) -> None:
        """logits (rows x vocab) of one new token per row; IndexError for a token, position
        or cache length out of range."""
# fmt: on
