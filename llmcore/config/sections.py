"""The sections of a config as dataclasses, with every default, and their plain-data form.

``ModelConfig`` keeps each field as the config wrote it (None: derived) and resolves the
derived shape (``head_size``, ``kv_heads``, ``qkv_has_bias``) in one place.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Component:
    """A registered component by name, with the keyword params for its factory."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """``{"name": ..., **params}``, the form written to config files."""
        return {"name": self.name, **self.params}


def _c(name: str, **params: Any) -> Any:
    return field(default_factory=lambda: Component(name, dict(params)))


@dataclass
class ChatTemplate:
    """How a conversation becomes text: each message is ``<role marker> content <end>``.

    With ``special: true`` the markers are special tokens of the vocabulary (bpe); otherwise
    they are plain text (the ``char`` tokenizer, whose alphabet must hold their characters).
    A generated answer ends at ``end``.
    """

    bos: str = ""  # once, before the whole conversation
    system: str = ""  # marker before a system message
    user: str = "Q: "
    assistant: str = "A: "
    end: str = "\n"  # after every message
    special: bool = False  # markers are special tokens


@dataclass
class TokenizerConfig:
    """Which tokenizer: ``name`` is a registered tokenizer, ``params`` go to its factory
    (for ``bpe``: ``path`` and ``encoding``). ``char`` learns its vocabulary from the data.
    ``chat_template`` is the chat format used by fine-tuning and chat alike."""

    name: str = "char"
    params: dict[str, Any] = field(default_factory=dict)
    chat_template: ChatTemplate | None = None


@dataclass
class ModelConfig:
    """The transformer's shape and the components of its blocks.

    ``n_kv_head``, ``head_dim`` and ``qkv_bias`` hold what the config file says, None meaning
    "derived"; read the values a model is built with from :attr:`kv_heads`,
    :attr:`head_size` and :attr:`qkv_has_bias`, which derive them here and nowhere else.
    Keeping the fields as written means a saved ``config.yaml`` stays as the user wrote it,
    and changing ``n_head`` or ``n_embd`` later (``--set``, ``dataclasses.replace``) cannot
    leave a stale derived value behind.
    """

    vocab_size: int | None = None  # None: taken from the tokenizer
    block_size: int = 256
    n_layer: int = 6
    n_head: int = 6
    n_kv_head: int | None = None  # None: n_head (no grouped-query attention)
    n_embd: int = 384
    head_dim: int | None = None  # None: n_embd // n_head
    mlp_hidden: int | None = None  # None: the MLP plugin's customary width
    dropout: float = 0.0
    bias: bool = True  # biases in linear layers and norms
    qkv_bias: bool | None = None  # None: same as bias
    tie_embeddings: bool = True
    sliding_window: int | None = None
    init_std: float = 0.02
    attention: Component = _c("sdpa")
    norm: Component = _c("layernorm")
    mlp: Component = _c("gelu")
    position: Component = _c("learned")

    @property
    def kv_heads(self) -> int:
        """Key/value heads: ``n_kv_head``, or ``n_head`` (plain multi-head attention)."""
        return self.n_head if self.n_kv_head is None else self.n_kv_head

    @property
    def head_size(self) -> int:
        """Width of one attention head: ``head_dim``, or ``n_embd // n_head``."""
        return self.n_embd // self.n_head if self.head_dim is None else self.head_dim

    @property
    def qkv_has_bias(self) -> bool:
        """Whether the q/k/v projection has a bias: ``qkv_bias``, or ``bias``."""
        return self.bias if self.qkv_bias is None else self.qkv_bias


@dataclass
class DataConfig:
    """Training text. ``path`` None uses the bundled Tiny Shakespeare."""

    path: str | None = None
    jsonl_field: str = "text"  # the field read from each JSONL record
    val_fraction: float = 0.1  # the last fraction of the tokens is the validation split
    mode: str = "random"  # random windows (nanoGPT's way) or sequential epochs
    cache_dir: str | None = None  # None: <out_dir>/.cache


@dataclass
class TrainConfig:
    """The optimisation loop."""

    max_iters: int = 2000
    batch_size: int = 12
    grad_accum: int = 1
    grad_clip: float = 1.0
    eval_interval: int = 250
    eval_iters: int = 20
    log_interval: int = 10
    seed: int = 1337
    device: str = "auto"
    dtype: str = "float32"  # float32, bfloat16 (autocast), or auto (bfloat16 where native)
    compile: bool = False
    out_dir: str = "runs"
    name: str | None = None  # run folder name; None: the preset or config file name
    checkpoint_interval: int | None = None  # None: at every eval
    keep_last: int = 2
    distributed: str = "ddp"  # ddp or fsdp, used under torchrun
    sample_tokens: int = 200  # length of the sample printed at the end (0: none)
    optimizer: Component = _c("adamw", lr=1e-3, betas=[0.9, 0.99], weight_decay=0.1)
    schedule: Component = _c("cosine", warmup_iters=100, decay_iters=2000, min_lr=1e-4)
    loggers: list[Component] = field(default_factory=lambda: [Component("jsonl")])


@dataclass
class GenerateConfig:
    """Text generation."""

    prompt: str = "\n"
    max_new_tokens: int = 200
    samplers: list[Component] = field(
        default_factory=lambda: [
            Component("temperature", {"temperature": 0.8}),
            Component("top_k", {"k": 50}),
        ]
    )
    decoder: Component = _c("multinomial")
    seed: int | None = 1337
    stop: list[str] = field(default_factory=list)
    # Past block_size, condition on the last block_size tokens (nanoGPT's way) instead of
    # stopping with an error.
    sliding_context: bool = False


@dataclass
class SFTConfig:
    """Supervised fine-tuning on ``{"prompt", "response"}`` or ``{"messages"}`` records."""

    packing: bool = False  # several short examples per block, attention kept apart


@dataclass
class RewardModelConfig:
    """Reward model: the LM backbone with a scalar head, Bradley-Terry loss."""

    head_init_std: float = 0.0  # 0: a zero head (every score starts at 0)


@dataclass
class PPOConfig:
    """PPO against a reward model run or a ``reward`` plugin."""

    reward_model: str | None = None  # a reward-model run; or use ``reward``
    reward: Component | None = None  # a registered reward function
    rollout_batch: int = 32  # prompts sampled per PPO step
    max_new_tokens: int = 48
    epochs: int = 4  # passes over each rollout batch
    minibatch: int = 8
    clip: float = 0.2  # policy ratio clip
    value_clip: float | None = 0.2  # None: no value clipping
    value_coef: float = 0.5
    gamma: float = 1.0
    lam: float = 0.95
    kl_coef: float = 0.05  # initial per-token KL penalty
    kl_target: float | None = 6.0  # None: fixed coefficient; else adaptive (sequence KL)
    kl_horizon: int = 10000
    whiten_advantages: bool = True
    score_clip: float | None = None
    missing_end_penalty: float | None = None  # subtracted from answers cut before their end


@dataclass
class DPOConfig:
    """Direct preference optimisation on ``{"prompt", "chosen", "rejected"}`` records."""

    beta: float = 0.1
    label_smoothing: float = 0.0  # conservative DPO: assumed label noise
    rpo_alpha: float = 0.0  # weight of the chosen answers' mean token NLL (RPO); 0: plain DPO


@dataclass
class FinetuneConfig:
    """Fine-tuning: the run it starts from, its data, and each method's settings.

    The model and tokenizer come from ``base``; ``train`` holds the optimisation loop and
    ``generate`` the samplers used for rollouts and samples.
    """

    base: str | None = None  # run or checkpoint folder to start from
    reference: str | None = None  # DPO/PPO frozen reference; None: the base
    data: str | None = None  # JSONL records
    val_fraction: float = 0.1  # the last fraction of the records is held out
    max_len: int | None = None  # tokens per example; None: model.block_size
    adapter: Component | None = None  # for example {name: lora, rank: 8}
    eval_samples: int = 64  # sampled answers scored at each evaluation (0: none)
    metrics: list[Component] = field(default_factory=list)  # reward plugins scoring samples
    sft: SFTConfig = field(default_factory=SFTConfig)
    reward: RewardModelConfig = field(default_factory=RewardModelConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)


@dataclass
class Config:
    """A whole llmcore config."""

    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    source: str | None = field(default=None, metadata={"internal": True})

    def to_dict(self) -> dict[str, Any]:
        """Plain data with every default filled in, ready for YAML or JSON."""
        return {
            f.name: _dump(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if not f.metadata.get("internal")
        }


def _dump(value: Any) -> Any:
    if isinstance(value, Component):
        return value.to_dict()
    if isinstance(value, TokenizerConfig):
        out = {"name": value.name, **value.params}
        if value.chat_template is not None:
            out["chat_template"] = _dump(value.chat_template)
        return out
    if dataclasses.is_dataclass(value):
        return {
            f.name: _dump(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if not f.metadata.get("internal")
        }
    if isinstance(value, list):
        return [_dump(v) for v in value]
    if isinstance(value, dict):
        return {k: _dump(v) for k, v in value.items()}
    return value
