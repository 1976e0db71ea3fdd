"""Typed configuration: tokenizer, model, data, train and generate sections.

A config is one YAML (or TOML or JSON) file. Components are named by their registered name
plus params, written either as a bare name (``norm: rmsnorm``) or as a mapping
(``norm: {name: rmsnorm, eps: 1.0e-6}``). Validation reports the dotted path of a bad field,
what was found and what is allowed; unknown keys are errors. Presets ship as package data.
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import tomllib
import yaml

from llmcore.errors import ConfigError


class _YamlLoader(yaml.SafeLoader):
    """Safe YAML that reads ``1e-3`` as a float, as YAML 1.2 and every user expects."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_YamlLoader)  # noqa: S506 - a SafeLoader subclass


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


# -- loading ---------------------------------------------------------------------------------


def presets() -> list[str]:
    """Names of the presets shipped with llmcore."""
    root = resources.files("llmcore") / "presets"
    return sorted(p.name[: -len(".yaml")] for p in root.iterdir() if p.name.endswith(".yaml"))


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Parse a YAML, TOML or JSON file into a mapping; errors name the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}") from None
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            data = _yaml_load(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not valid {path.suffix.lstrip('.') or 'YAML'}: {exc}") from None
    if not data:  # most often a file saved before it was written: defaults would hide that
        raise ConfigError(
            f"{path}: the config file is empty; give at least one section (model:, train:, "
            "...), or name a shipped preset instead (e.g. --preset shakespeare-char)"
        )
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: the top level must be a mapping of sections, found {type(data).__name__}"
        )
    return data


def _preset_data(name: str) -> dict[str, Any]:
    if name not in presets():
        raise ConfigError(f"unknown preset {name!r}; presets: {', '.join(presets())}")
    text = (resources.files("llmcore") / "presets" / f"{name}.yaml").read_text(encoding="utf-8")
    return _yaml_load(text) or {}


def load_config(
    path_or_preset: str | Path | None = None,
    overrides: typing.Iterable[str] = (),
    *,
    preset: str | None = None,
) -> Config:
    """Load a config file or preset, apply ``section.key=value`` overrides, and validate.

    Args:
        path_or_preset: a YAML/TOML/JSON file, or the name of a shipped preset. None with no
            ``preset`` gives the ``shakespeare-char`` preset.
        overrides: strings ``"train.max_iters=100"``; values are parsed as YAML.
        preset: a preset the file is laid over (the file's values win).
    """
    raw: dict[str, Any] = {}
    source = "<defaults>"
    if preset is not None:
        raw = _preset_data(preset)
        source = preset
    if path_or_preset is None and preset is None:
        path_or_preset = "shakespeare-char"
    if path_or_preset is not None:
        p = Path(path_or_preset)
        if p.suffix in (".yaml", ".yml", ".toml", ".json") or p.exists():
            data = read_config_file(p)
            source = str(p)
        else:
            data = _preset_data(str(path_or_preset))
            source = str(path_or_preset)
        raw = _merge(raw, data)
    for item in overrides:
        _apply_override(raw, item)
    cfg = config_from_dict(raw, source=source)
    cfg.source = source
    return cfg


def config_from_dict(raw: dict[str, Any], source: str = "<config>") -> Config:
    """Validate a mapping into a :class:`Config`; errors carry ``source`` and the field path."""
    try:
        cfg = _convert(Config, raw, "")
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    check_consistency(cfg, source)
    return cfg


def check_consistency(cfg: Config, source: str = "<config>") -> None:
    """Cross-field checks that types alone cannot express."""
    m = cfg.model
    positive = {
        "model.block_size": m.block_size,
        "model.n_layer": m.n_layer,
        "model.n_head": m.n_head,
        "model.n_embd": m.n_embd,
        "train.max_iters": cfg.train.max_iters,
        "train.batch_size": cfg.train.batch_size,
        "train.grad_accum": cfg.train.grad_accum,
        "train.eval_interval": cfg.train.eval_interval,
        "train.eval_iters": cfg.train.eval_iters,
        "train.log_interval": cfg.train.log_interval,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{source}: {key}: must be a positive integer, found {value}")
    if m.head_dim is None and m.n_embd % m.n_head:
        raise ConfigError(
            f"{source}: model.n_embd: {m.n_embd} is not divisible by model.n_head={m.n_head}"
        )
    if m.head_size <= 0:
        raise ConfigError(
            f"{source}: model.head_dim: must be a positive integer, found {m.head_dim}"
        )
    kv = m.kv_heads
    if kv <= 0 or m.n_head % kv:
        raise ConfigError(f"{source}: model.n_kv_head: {kv} must divide model.n_head={m.n_head}")
    if not 0.0 <= m.dropout < 1.0:
        raise ConfigError(f"{source}: model.dropout: must be in [0, 1), found {m.dropout}")
    if not 0.0 < cfg.data.val_fraction < 1.0:
        raise ConfigError(
            f"{source}: data.val_fraction: must be in (0, 1), found {cfg.data.val_fraction}"
        )
    choices = {
        "data.mode": (cfg.data.mode, ("random", "sequential")),
        "train.dtype": (cfg.train.dtype, ("float32", "bfloat16", "auto")),
        "train.distributed": (cfg.train.distributed, ("ddp", "fsdp")),
    }
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise ConfigError(f"{source}: {key}: {value!r} is not one of {', '.join(allowed)}")


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        old = out.get(key)
        renamed = (
            isinstance(old, dict)
            and isinstance(value, dict)
            and value.get("name", old.get("name")) != old.get("name")
        )
        if isinstance(value, dict) and isinstance(old, dict) and not renamed:
            out[key] = _merge(old, value)
        else:
            out[key] = value
    return out


def _apply_override(raw: dict[str, Any], item: str) -> None:
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected section.key=value")
    key, _, text = item.partition("=")
    parts = [p for p in key.strip().split(".") if p]
    if len(parts) < 2:
        raise ConfigError(
            f"override {item!r}: the key must name a section and a field, like train.max_iters"
        )
    value = _parse_value(text)
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if isinstance(child, str):  # a component given by name only: open it up
            child = {"name": child}
        elif child is None:
            child = {}
        elif not isinstance(child, dict):
            raise ConfigError(f"override {item!r}: {part} is not a section")
        node[part] = child
        node = child
    node[parts[-1]] = value


def _parse_value(text: str) -> Any:
    """A command-line value, read as YAML (``3e-4`` is a float, ``[1, 2]`` a list)."""
    try:
        return _yaml_load(text)
    except yaml.YAMLError:
        return text


# -- conversion by type hints ------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "mapping"
    if tp is Component:
        return "component (a name or a mapping with 'name')"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _convert(tp: Any, value: Any, path: str) -> Any:
    where = path or "<top>"
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, path)
            except ConfigError as exc:
                errors.append(exc)
        raise ConfigError(f"{where}: expected {_type_name(tp)}, found {value!r}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected {_type_name(tp)}, found {value!r}")
        (item,) = typing.get_args(tp)
        return [_convert(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, found {value!r}")
        return dict(value)
    if tp is Component:
        return _component(value, where)
    if dataclasses.is_dataclass(tp):
        return _dataclass(tp, value, path)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is Any:
        return value
    raise ConfigError(
        f"{where}: expected {_type_name(tp)}, found {value!r} ({type(value).__name__})"
    )


def _component(value: Any, where: str) -> Component:
    if isinstance(value, Component):
        return value
    if isinstance(value, str) and value:
        return Component(value)
    if isinstance(value, dict):
        params = dict(value)
        name = params.pop("name", None)
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}.name: a component needs a registered name, found {name!r}")
        return Component(name, params)
    raise ConfigError(f"{where}: expected {_type_name(Component)}, found {value!r}")


def _dataclass(cls: Any, value: Any, path: str) -> Any:
    where = path or "<top>"
    if isinstance(value, cls):
        return value
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, found {value!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    if cls is TokenizerConfig:  # tokenizer: {name: bpe, path: ...}: extra keys are params
        value = dict(value)
        params = {k: value.pop(k) for k in list(value) if k not in fields}
        value.setdefault("params", {})
        value["params"] = {**value["params"], **params}
    unknown = [k for k in value if k not in fields]
    if unknown:
        prefix = f"{path}." if path else ""
        raise ConfigError(
            f"{prefix}{unknown[0]}: unknown key; allowed keys{' of ' + path if path else ''}: {', '.join(fields)}"
        )
    kwargs = {k: _convert(hints[k], v, f"{path}.{k}" if path else k) for k, v in value.items()}
    return cls(**kwargs)


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


def dump_yaml(cfg: Config) -> str:
    """The resolved config as YAML text."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True)
