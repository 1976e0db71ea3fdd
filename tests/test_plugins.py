"""The plugin manager: entry points, lookups and its failure modes with real broken plugins."""

from __future__ import annotations

import inspect
import sys
import textwrap
from pathlib import Path

import pytest

import llmcore
from llmcore import hookspecs, plugins
from llmcore.contracts import COMPONENT_KINDS, KINDS
from llmcore.errors import PluginError


def make_plugin(
    root: Path, dist: str, module: str, source: str, ep_name: str | None = None
) -> None:
    """An installed-looking distribution: a module plus a dist-info with an llmcore entry point."""
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-0.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text(f"[llmcore]\n{ep_name or module} = {module}\n")


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """A folder on sys.path for fake plugin distributions; plugins reload before and after."""
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    monkeypatch.undo()
    for name in [m for m in sys.modules if m.startswith("fake_")]:
        del sys.modules[name]
    plugins.reload()


GOOD = """
import llmcore
from llmcore.builtin.norms import RMSNorm

@llmcore.hookimpl
def register_norms(register):
    register("fake_norm", RMSNorm)
"""


def test_builtins_are_found_through_entry_points():
    infos = {i.name: i for i in plugins.plugin_infos()}
    assert infos["norms"].distribution == "llmcore"
    assert set(llmcore.available("norm")) >= {"layernorm", "rmsnorm"}
    assert llmcore.available("norm")["rmsnorm"].plugin == "norms"
    for kind in (
        "tokenizer",
        "attention",
        "mlp",
        "position",
        "optimizer",
        "schedule",
        "sampler",
        "decoder",
        "logger",
    ):
        assert llmcore.available(kind), f"no built-in {kind}"


def test_unknown_name_lists_the_registered_names():
    with pytest.raises(
        PluginError, match=r"unknown norm 'nope'; registered norms: layernorm, rmsnorm"
    ):
        llmcore.create("norm", "nope", dim=4)


def test_unknown_kind():
    with pytest.raises(PluginError, match="unknown component kind 'widget'"):
        llmcore.available("widget")


def test_create_passes_params_and_reports_bad_ones():
    norm = llmcore.create("norm", "rmsnorm", dim=8, eps=1e-3)
    assert norm.eps == 1e-3
    with pytest.raises(PluginError, match=r"norm 'rmsnorm' \(plugin 'norms'\) rejected its params"):
        llmcore.create("norm", "rmsnorm", dim=8, colour="red")


def test_third_party_plugin_loads_like_a_builtin(plugin_dir):
    make_plugin(plugin_dir, "fake-good", "fake_good", GOOD)
    plugins.reload()
    provider = llmcore.available("norm")["fake_norm"]
    assert (provider.plugin, provider.distribution, provider.version) == (
        "fake_good",
        "fake-good",
        "0.3",
    )
    assert llmcore.create("norm", "fake_norm", dim=4).weight.shape == (4,)


def test_plugin_that_fails_to_import_is_reported_and_the_others_keep_working(plugin_dir, capsys):
    make_plugin(plugin_dir, "fake-broken", "fake_broken", "raise RuntimeError('boom at import')\n")
    make_plugin(plugin_dir, "fake-good", "fake_good", GOOD)
    plugins.reload()
    err = capsys.readouterr().err
    assert (
        "plugin 'fake_broken' (fake-broken 0.3) failed to load: RuntimeError: boom at import" in err
    )
    assert "fake_norm" in llmcore.available("norm")
    assert "layernorm" in llmcore.available("norm")
    info = {i.name: i for i in plugins.plugin_infos()}["fake_broken"]
    assert info.error == "RuntimeError: boom at import"
    with pytest.raises(
        PluginError,
        match=r"plugins that failed to load: .*fake_broken \(RuntimeError: boom at import\)",
    ):
        llmcore.create("norm", "missing_norm", dim=4)


def test_duplicate_name_is_an_error_naming_both_plugins(plugin_dir, capsys):
    make_plugin(plugin_dir, "fake-good", "fake_good", GOOD)
    make_plugin(plugin_dir, "fake-twin", "fake_twin", GOOD)
    plugins.reload()
    assert "registered twice" in capsys.readouterr().err
    with pytest.raises(
        PluginError,
        match=r"norm 'fake_norm' is registered twice: by plugin 'fake_good' "
        r"\(fake-good\) and by plugin 'fake_twin' \(fake-twin\)",
    ):
        llmcore.create("norm", "fake_norm", dim=4)
    assert llmcore.create("norm", "rmsnorm", dim=4) is not None  # the rest still works


def test_duplicate_of_a_builtin_name_is_an_error_too(plugin_dir):
    make_plugin(plugin_dir, "fake-clash", "fake_clash", GOOD.replace('"fake_norm"', '"layernorm"'))
    plugins.reload()
    with pytest.raises(PluginError, match=r"'norms' \(llmcore\) and by plugin 'fake_clash'"):
        llmcore.create("norm", "layernorm", dim=4)


def test_hook_that_raises_loses_only_its_plugin(plugin_dir, capsys):
    bad_hook = """
    import llmcore

    @llmcore.hookimpl
    def register_samplers(register):
        raise ValueError("cannot register")
    """
    make_plugin(plugin_dir, "fake-hook", "fake_hook", bad_hook)
    plugins.reload()
    assert "register_samplers raised ValueError: cannot register" in capsys.readouterr().err
    assert "top_k" in llmcore.available("sampler")


def test_llmcore_plugins_env_restricts_third_party_plugins(plugin_dir, monkeypatch):
    make_plugin(plugin_dir, "fake-good", "fake_good", GOOD)
    make_plugin(plugin_dir, "fake-other", "fake_other", GOOD.replace("fake_norm", "other_norm"))
    monkeypatch.setenv("LLMCORE_PLUGINS", "fake_other")
    plugins.reload()
    names = set(llmcore.available("norm"))
    assert "other_norm" in names and "fake_norm" not in names
    assert "layernorm" in names  # built-ins always load
    monkeypatch.setenv("LLMCORE_PLUGINS", "")
    plugins.reload()
    assert "other_norm" not in llmcore.available("norm")


def test_hookspecs_are_documented():
    from llmcore import hookspecs

    for kind, hook in hookspecs.HOOK_OF_KIND.items():
        doc = getattr(hookspecs, hook).__doc__
        assert doc and "register" in doc and "Args:" in doc, f"hook of {kind} lacks a docstring"


def test_the_table_of_kinds_and_the_hookspecs_agree():
    """Every kind's hook is a documented hookspec naming the kind's protocol and the
    arguments llmcore passes its factories; no hookspec lies outside the table."""
    specs = {
        name
        for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
        if hasattr(fn, "llmcore_spec")
    }
    assert specs == {k.hook for k in COMPONENT_KINDS.values()}
    assert tuple(COMPONENT_KINDS) == KINDS and all(n == k.name for n, k in COMPONENT_KINDS.items())
    for kind in COMPONENT_KINDS.values():
        doc = getattr(hookspecs, kind.hook).__doc__
        assert f"llmcore.contracts.{kind.protocol.__name__}" in doc, kind.name
        assert all(arg in doc for arg in kind.given), kind.name
    assert set(plugins.registry().providers) == set(KINDS)


def test_every_kind_is_loaded_through_its_hook_from_the_table(plugin_dir):
    every_hook = "import llmcore\n" + "".join(
        f"\n@llmcore.hookimpl\ndef {k.hook}(register):\n    register('fake_{k.name}', object)\n"
        for k in COMPONENT_KINDS.values()
    )
    make_plugin(plugin_dir, "fake-all", "fake_all", every_hook)
    plugins.reload()
    info = {i.name: i for i in plugins.plugin_infos()}["fake_all"]
    assert info.components == {k: [f"fake_{k}"] for k in KINDS}


def test_the_plugin_authors_table_of_hooks_matches_the_table_of_kinds():
    readme = Path(__file__).parents[1] / "plugins" / "llmcore-example" / "README.md"
    rows = [
        [cell.strip(" `") for cell in line.strip("|").split("|")]
        for line in readme.read_text(encoding="utf-8").splitlines()
        if line.startswith("| ") and "`register_" in line
    ]
    assert {kind: hook for kind, hook, _ in rows} == hookspecs.HOOK_OF_KIND
    for kind, _, call in rows:
        assert all(arg in call for arg in COMPONENT_KINDS[kind].given), kind
