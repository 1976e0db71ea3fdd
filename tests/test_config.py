"""Config loading and validation: presets, file formats, overrides, error paths."""

from __future__ import annotations

import dataclasses
import json

import pytest
import yaml

import llmcore
from llmcore.components import validate_components
from llmcore.config import (
    Component,
    ModelConfig,
    config_from_dict,
    dump_yaml,
    load_config,
    presets,
)
from llmcore.errors import ConfigError


def test_presets_ship_and_validate():
    assert {"shakespeare-char", "gpt2", "llama-tiny"} <= set(presets())
    for name in presets():
        validate_components(load_config(name))


def test_shakespeare_char_is_nanogpts_baby_gpt():
    cfg = load_config("shakespeare-char")
    m, t = cfg.model, cfg.train
    assert (cfg.tokenizer.name, m.n_layer, m.n_head, m.n_embd, m.block_size, m.dropout) == (
        "char",
        4,
        4,
        128,
        64,
        0.0,
    )
    assert (t.batch_size, t.max_iters, t.grad_clip, t.eval_interval, t.eval_iters) == (
        12,
        2000,
        1.0,
        250,
        20,
    )
    # nanoGPT's betas and decay; the learning rate is 3e-3, not its 1e-3 (see the preset)
    assert t.optimizer == Component(
        "adamw", {"lr": 3e-3, "betas": [0.9, 0.99], "weight_decay": 0.1}
    )
    assert t.dtype == "auto"
    assert t.schedule == Component(
        "cosine", {"warmup_iters": 100, "decay_iters": 2000, "min_lr": 1e-4}
    )


def test_gpt2_and_llama_tiny_shapes():
    g = load_config("gpt2").model
    assert (
        g.n_layer,
        g.n_head,
        g.n_embd,
        g.position.name,
        g.norm.name,
        g.mlp.name,
        g.tie_embeddings,
    ) == (12, 12, 768, "learned", "layernorm", "gelu", True)
    lt = load_config("llama-tiny").model
    assert (lt.position.name, lt.norm.name, lt.mlp.name, lt.tie_embeddings) == (
        "rope",
        "rmsnorm",
        "swiglu",
        False,
    )
    assert lt.n_kv_head < lt.n_head


def test_default_is_shakespeare_char():
    assert load_config().model == load_config("shakespeare-char").model


@pytest.mark.parametrize("suffix", [".yaml", ".toml", ".json"])
def test_file_formats(tmp_path, suffix):
    data = {
        "model": {"n_layer": 3, "norm": {"name": "rmsnorm", "eps": 1e-6}},
        "train": {"max_iters": 7},
    }
    path = tmp_path / f"c{suffix}"
    if suffix == ".toml":
        path.write_text(
            '[model]\nn_layer = 3\nnorm = {name = "rmsnorm", eps = 1e-6}\n[train]\nmax_iters = 7\n'
        )
    elif suffix == ".json":
        path.write_text(json.dumps(data))
    else:
        path.write_text(
            "model:\n  n_layer: 3\n  norm: {name: rmsnorm, eps: 1.0e-6}\ntrain:\n  max_iters: 7\n"
        )
    cfg = load_config(path)
    assert cfg.model.n_layer == 3 and cfg.train.max_iters == 7
    assert cfg.model.norm == Component("rmsnorm", {"eps": 1e-6})


def test_overrides_and_preset_layering(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  max_iters: 7\n")
    cfg = load_config(
        path,
        ["train.optimizer.lr=3e-4", "model.norm=rmsnorm", "model.n_kv_head=2"],
        preset="shakespeare-char",
    )
    assert cfg.model.n_layer == 4 and cfg.train.max_iters == 7  # preset under, file over
    assert (
        cfg.train.optimizer.params["lr"] == 3e-4
        and cfg.train.optimizer.params["weight_decay"] == 0.1
    )
    assert cfg.model.norm.name == "rmsnorm" and cfg.model.n_kv_head == 2


def test_renaming_a_component_drops_the_old_params():
    cfg = load_config("shakespeare-char", ["train.schedule={name: constant}"])
    assert cfg.train.schedule == Component("constant", {})


def test_resolved_config_round_trips():
    cfg = load_config("llama-tiny")
    import yaml

    again = config_from_dict(yaml.safe_load(dump_yaml(cfg)))
    assert again.to_dict() == cfg.to_dict()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"model": {"n_layr": 2}},
            r"c\.yaml: model\.n_layr: unknown key; allowed keys of model: vocab_size",
        ),
        ({"modle": {}}, r"c\.yaml: modle: unknown key; allowed keys: tokenizer, model"),
        ({"model": {"n_layer": "four"}}, r"model\.n_layer: expected int, found 'four' \(str\)"),
        ({"model": {"n_layer": True}}, r"model\.n_layer: expected int, found True"),
        ({"model": {"dropout": "x"}}, r"model\.dropout: expected float"),
        (
            {"train": {"optimizer": {"lr": 1}}},
            r"train\.optimizer\.name: a component needs a registered name",
        ),
        ({"generate": {"samplers": "top_k"}}, r"generate\.samplers: expected list of component"),
        (
            {"model": {"n_embd": 100, "n_head": 3}},
            r"model\.n_embd: 100 is not divisible by model\.n_head=3",
        ),
        (
            {"model": {"n_head": 4, "n_kv_head": 3}},
            r"model\.n_kv_head: 3 must divide model\.n_head=4",
        ),
        (
            {"train": {"dtype": "float16"}},
            r"train\.dtype: 'float16' is not one of float32, bfloat16",
        ),
        ({"train": {"max_iters": 0}}, r"train\.max_iters: must be a positive integer, found 0"),
    ],
)
def test_validation_names_the_file_and_field(raw, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(raw, source="c.yaml")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "model.norm=nonorm",
            r"model\.norm: unknown norm 'nonorm'; registered norms: layernorm, rmsnorm",
        ),
        (
            "train.optimizer.lrr=0.1",
            r"train\.optimizer\.lrr: unknown param of optimizer 'adamw' \(plugin 'optimizers'\); its params: lr, betas",
        ),
        ("model.mlp.dim=3", r"model\.mlp\.dim: set by llmcore for mlp 'gelu'"),
        ("generate.samplers=[{name: top_q}]", r"generate\.samplers\[0\]: unknown sampler 'top_q'"),
    ],
)
def test_component_names_and_params_are_checked_against_plugins(override, message):
    with pytest.raises(ConfigError, match=message):
        validate_components(load_config("shakespeare-char", [override]))


def test_unreadable_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match=r"missing\.yaml: config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid yaml"):
        load_config(bad)
    top = tmp_path / "list.yaml"
    top.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match=r"list\.yaml: the top level must be a mapping"):
        load_config(top)
    with pytest.raises(
        ConfigError, match=r"unknown preset 'nope'; presets: gpt2, llama-tiny, shakespeare-char"
    ):
        load_config("nope")
    with pytest.raises(
        ConfigError, match=r"override 'train\.max_iters': expected section\.key=value"
    ):
        load_config("shakespeare-char", ["train.max_iters"])


def test_public_api_builds_from_config():
    cfg = load_config(
        "llama-tiny", ["model.n_layer=1", "model.n_embd=64", "model.n_head=4", "model.n_kv_head=1"]
    )
    model = llmcore.build_model(cfg, vocab_size=50)
    assert "params=" in repr(model) and "n_kv_head=1" in repr(model)
    opt = llmcore.build_optimizer(cfg, model)
    assert isinstance(opt, __import__("torch").optim.AdamW)
    samplers, decoder = llmcore.build_sampler(load_config("shakespeare-char"))
    assert [type(s).__name__ for s in samplers] == ["Temperature", "TopK"] and type(
        decoder
    ).__name__ == "Multinomial"


def test_gpt2_preset_tokenizer_is_bundled_and_equals_the_reference_files():
    from pathlib import Path

    from llmcore.train.setup import build_tokenizer

    tok = build_tokenizer(load_config("gpt2"))
    ref = llmcore.load_tokenizer(Path(__file__).parent / "fixtures" / "tokenizers" / "gpt2")
    text = "Hello world, it's 2026!\n\tSpaces   and émojis 🎉"
    assert tok.vocab_size == ref.vocab_size == 50257
    assert tok.encode(text) == ref.encode(text)


def test_model_config_derives_heads_and_qkv_bias_from_the_fields_as_written():
    m = ModelConfig(n_head=6, n_embd=384, bias=False)
    assert (m.head_size, m.kv_heads, m.qkv_has_bias) == (384 // 6, 6, False)
    m = ModelConfig(n_head=8, n_kv_head=2, n_embd=64, head_dim=16, bias=True, qkv_bias=False)
    assert (m.head_size, m.kv_heads, m.qkv_has_bias) == (16, 2, False)


def test_changing_n_head_later_leaves_no_stale_derived_value(tmp_path):
    m = load_config("shakespeare-char").model
    assert m.head_dim is None and m.head_size == m.n_embd // m.n_head
    wider = dataclasses.replace(m, n_head=m.n_head * 2)
    assert (wider.head_size, wider.kv_heads) == (m.n_embd // (m.n_head * 2), m.n_head * 2)
    # a saved config keeps the derived fields unset, so --set over it derives afresh
    saved = yaml.safe_load(dump_yaml(load_config("shakespeare-char")))
    assert saved["model"]["head_dim"] is None and saved["model"]["n_kv_head"] is None
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(saved))
    again = load_config(path, ["model.n_head=2"]).model
    assert (again.head_size, again.kv_heads) == (again.n_embd // 2, 2)


def test_head_dim_must_be_positive():
    with pytest.raises(ConfigError, match=r"model\.head_dim: must be a positive integer"):
        config_from_dict({"model": {"head_dim": 0}})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "model:\n  norm: nonorm\n",
            r"c\.yaml: model\.norm: unknown norm 'nonorm'; registered norms: layernorm, rmsnorm",
        ),
        (
            "train:\n  optimizer: {name: adamw, lrr: 0.1}\n",
            r"c\.yaml: train\.optimizer\.lrr: unknown param of optimizer 'adamw' "
            r"\(plugin 'optimizers'\); its params: lr, betas",
        ),
        (
            "model:\n  mlp: {name: gelu, hidden_dim: 8}\n",
            r"c\.yaml: model\.mlp\.hidden_dim: set by llmcore for mlp 'gelu', not a config param "
            r"\(plugin 'mlps'\); its params: approximate",
        ),
        (
            "finetune:\n  adapter: {name: lora, rnk: 4}\n",
            r"c\.yaml: finetune\.adapter\.rnk: unknown param of adapter 'lora' \(plugin 'lora'\)",
        ),
        (
            "finetune:\n  metrics: [nope]\n",
            r"c\.yaml: finetune\.metrics\[0\]: unknown reward 'nope'; registered rewards: format",
        ),
    ],
)
def test_component_errors_name_the_config_file(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        validate_components(load_config(path, preset="shakespeare-char"))


@pytest.fixture
def fresh_registry(monkeypatch):
    """A newly loaded plugin registry, which has checked no config entry yet."""
    from llmcore import plugins

    reg = plugins.PluginRegistry()
    reg.load_entry_points()
    monkeypatch.setattr(plugins, "_registry", reg)
    return reg


@pytest.fixture
def param_checks(monkeypatch):
    """The (kind, name) of every param check of a config entry, in order."""
    from llmcore import components

    seen: list[tuple[str, str]] = []
    real = components._check_params

    def counting(provider, comp, where, factory):
        seen.append((provider.kind, comp.name))
        real(provider, comp, where, factory)

    monkeypatch.setattr(components, "_check_params", counting)
    return seen


def test_each_config_entry_is_checked_once_from_config_to_objects(fresh_registry, param_checks):
    from llmcore.components import config_entries

    cfg = load_config("shakespeare-char", ["model.n_layer=3"])
    validate_components(cfg)
    want = sorted({(kind, comp.name) for _, kind, comp in config_entries(cfg)})
    assert sorted(param_checks) == want
    model = llmcore.build_model(cfg, vocab_size=40)  # 7 norms, 3 MLPs, 3 attentions
    opt = llmcore.build_optimizer(cfg, model)
    llmcore.build_schedule(cfg, opt)
    llmcore.build_sampler(cfg)
    assert sorted(param_checks) == want  # nothing was checked a second time


def test_building_an_unchecked_config_checks_each_entry_once(fresh_registry, param_checks):
    cfg = load_config("shakespeare-char", ["model.n_layer=3"])
    llmcore.build_model(cfg, vocab_size=40)  # 7 norms, 3 MLPs, 3 attentions
    assert {("attention", cfg.model.attention.name), ("mlp", "gelu"), ("norm", "layernorm")} <= set(
        param_checks
    )
    assert len(param_checks) == len(set(param_checks))


def test_a_checked_entry_still_fails_when_its_name_becomes_ambiguous(fresh_registry, capsys):
    from llmcore.components import create

    cfg = load_config("shakespeare-char")
    validate_components(cfg)

    class Clash:
        @llmcore.hookimpl
        def register_norms(self, register):
            register("layernorm", object)

    fresh_registry.add_plugin(Clash(), "clash")
    assert "norm 'layernorm' is registered twice" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"model\.norm: norm 'layernorm' is registered twice"):
        create("norm", cfg.model.norm, "model.norm", dim=4, bias=True)


def test_create_accepts_only_the_arguments_the_table_lists():
    from llmcore.components import create

    with pytest.raises(TypeError, match=r"llmcore passes norm factories only \('dim', 'bias'\)"):
        create("norm", Component("layernorm"), "model.norm", dim=4, bias=True, eps=1e-5)
