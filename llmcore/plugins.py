"""The plugin manager: loads the ``llmcore`` entry-point group and looks components up by name.

Built-in plugins are declared in llmcore's own ``pyproject.toml`` and load exactly like a
third-party package's. ``LLMCORE_PLUGINS`` (comma-separated entry-point names) restricts which
third-party plugins load; the built-in ones always do (set it to an empty string to load none).
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from llmcore import hookspecs
from llmcore.contracts import COMPONENT_KINDS, KINDS, ComponentKind
from llmcore.errors import PluginError

GROUP = "llmcore"
BUILTIN_DIST = "llmcore"


@dataclass
class Provider:
    """A registered component: its factory and the plugin that supplied it."""

    kind: str
    name: str
    factory: Callable[..., Any]
    plugin: str
    distribution: str
    version: str


@dataclass
class PluginInfo:
    """One loaded (or failed) plugin, as ``llmcore plugins`` shows it."""

    name: str
    distribution: str
    version: str
    components: dict[str, list[str]] = field(default_factory=dict)
    error: str | None = None


class PluginRegistry:
    """Loads plugins once and keeps ``kind -> name -> Provider``."""

    def __init__(self) -> None:
        self.manager = pluggy.PluginManager(GROUP)
        self.manager.add_hookspecs(hookspecs)
        self.providers: dict[str, dict[str, Provider]] = {kind: {} for kind in KINDS}
        self.conflicts: dict[tuple[str, str], str] = {}  # (kind, name) -> why it is ambiguous
        self.plugins: dict[str, PluginInfo] = {}
        # (kind, name, param names) of config entries whose params were checked against
        # their factory (see llmcore.components.check_entry), so each is checked once.
        self.accepted_entries: set[tuple[str, str, frozenset[str]]] = set()

    # -- loading ---------------------------------------------------------------------------
    def load_entry_points(self) -> None:
        """Import every plugin of the entry-point group and collect its registrations."""
        entry_points = importlib.metadata.entry_points(group=GROUP)
        if not any(_dist_name(ep) == BUILTIN_DIST for ep in entry_points):
            raise PluginError(
                "no built-in llmcore plugins were found through entry points: llmcore is not "
                "installed (run `pip install -e .` in the llmcore checkout)"
            )
        wanted = _wanted_plugins()
        for ep in sorted(entry_points, key=lambda e: (_dist_name(e) != BUILTIN_DIST, e.name)):
            dist = _dist_name(ep)
            if dist != BUILTIN_DIST and wanted is not None and ep.name not in wanted:
                continue
            if ep.name in self.plugins:
                continue  # the same distribution seen twice on sys.path
            version = ep.dist.version if ep.dist else "?"
            try:
                module = ep.load()
            except Exception as exc:  # a broken plugin must not take the others down
                self.plugins[ep.name] = PluginInfo(ep.name, dist, version, error=_describe(exc))
                print(
                    f"llmcore: plugin {ep.name!r} ({dist} {version}) failed to load: {_describe(exc)}",
                    file=sys.stderr,
                )
                continue
            self.add_plugin(module, ep.name, dist, version)

    def add_plugin(
        self, plugin: Any, name: str, distribution: str = "?", version: str = "?"
    ) -> None:
        """Register a plugin object or module and collect what its hooks register."""
        info = PluginInfo(name, distribution, version)
        self.plugins[name] = info
        try:
            self.manager.register(plugin, name=name)
        except ValueError as exc:
            info.error = _describe(exc)
            raise PluginError(f"plugin {name!r} could not be registered: {exc}") from exc
        for kind in COMPONENT_KINDS.values():
            hook = getattr(self.manager.hook, kind.hook)
            for impl in hook.get_hookimpls():
                if impl.plugin_name != name:
                    continue
                try:
                    impl.function(register=self._register_callback(kind.name, info))
                except Exception as exc:  # a hook that raises only loses its own plugin
                    info.error = f"{impl.function.__name__} raised {_describe(exc)}"
                    print(
                        f"llmcore: plugin {name!r} ({distribution} {version}) failed: {info.error}",
                        file=sys.stderr,
                    )

    def _register_callback(
        self, kind: str, info: PluginInfo
    ) -> Callable[[str, Callable[..., Any]], None]:
        def register(name: str, factory: Callable[..., Any]) -> None:
            if not isinstance(name, str) or not name:
                raise PluginError(
                    f"plugin {info.name!r} registered a {kind} with an invalid name {name!r}"
                )
            if not callable(factory):
                raise PluginError(
                    f"plugin {info.name!r} registered {kind} {name!r} with a non-callable factory"
                )
            existing = self.providers[kind].get(name)
            if existing is not None:
                # Neither wins silently: the name is an error until one plugin is removed.
                why = (
                    f"{kind} {name!r} is registered twice: by plugin {existing.plugin!r} "
                    f"({existing.distribution}) and by plugin {info.name!r} ({info.distribution})"
                )
                self.conflicts[(kind, name)] = why
                info.error = why
                print(f"llmcore: {why}", file=sys.stderr)
                return
            self.providers[kind][name] = Provider(
                kind, name, factory, info.name, info.distribution, info.version
            )
            info.components.setdefault(kind, []).append(name)

        return register

    # -- lookup ----------------------------------------------------------------------------
    def get(self, kind: str, name: str) -> Provider:
        """The provider of ``name`` for ``kind``; the error lists the registered names."""
        component_kind(kind)
        if (kind, name) in self.conflicts:
            raise PluginError(
                self.conflicts[(kind, name)] + "; uninstall one of them or narrow LLMCORE_PLUGINS"
            )
        try:
            return self.providers[kind][name]
        except KeyError:
            names = ", ".join(sorted(self.providers[kind])) or "(none)"
            msg = f"unknown {kind} {name!r}; registered {kind}s: {names}"
            failed = [p for p in self.plugins.values() if p.error]
            if failed:
                msg += "; plugins that failed to load: " + ", ".join(
                    f"{p.name} ({p.error})" for p in failed
                )
            raise PluginError(msg) from None


def component_kind(kind: str) -> ComponentKind:
    """The entry of ``kind`` in the table of kinds; the error lists the kinds."""
    try:
        return COMPONENT_KINDS[kind]
    except KeyError:
        raise PluginError(
            f"unknown component kind {kind!r}; kinds are: {', '.join(KINDS)}"
        ) from None


def _dist_name(ep: importlib.metadata.EntryPoint) -> str:
    return ep.dist.metadata["Name"] if ep.dist is not None else "?"


def _wanted_plugins() -> set[str] | None:
    value = os.environ.get("LLMCORE_PLUGINS")
    if value is None:
        return None
    return {part.strip() for part in value.split(",") if part.strip()}


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


_registry: PluginRegistry | None = None
_lock = threading.Lock()


def registry() -> PluginRegistry:
    """The process-wide registry, loaded on first use."""
    global _registry
    with _lock:
        if _registry is None:
            reg = PluginRegistry()
            reg.load_entry_points()
            _registry = reg
        return _registry


def reload() -> PluginRegistry:
    """Forget the loaded plugins and load the entry points again (after a ``pip install``)."""
    global _registry
    with _lock:
        _registry = None
    importlib.invalidate_caches()
    return registry()


def available(kind: str) -> dict[str, Provider]:
    """``name -> Provider`` of every registered component of ``kind``."""
    component_kind(kind)
    return dict(registry().providers[kind])


def create(kind: str, name: str, /, **params: Any) -> Any:
    """Build the ``kind`` component registered as ``name`` with keyword ``params``."""
    provider = registry().get(kind, name)
    try:
        return provider.factory(**params)
    except TypeError as exc:
        raise PluginError(
            f"{kind} {name!r} (plugin {provider.plugin!r}) rejected its params: {exc}"
        ) from exc


def factory(kind: str, name: str) -> Callable[..., Any]:
    """The factory registered as ``name`` for ``kind``."""
    return registry().get(kind, name).factory


def plugin_infos() -> list[PluginInfo]:
    """Every plugin the manager saw, loaded or failed."""
    return list(registry().plugins.values())
