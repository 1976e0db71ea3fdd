"""A model's own Jinja chat template: read from an HF folder and rendered as transformers
renders it.

The environment matches transformers' ``apply_chat_template``: jinja2's immutable sandbox
with ``trim_blocks`` and ``lstrip_blocks``, the ``loopcontrols`` extension, a ``tojson``
that does not escape HTML, and the globals ``raise_exception``, ``strftime_now``,
``dict`` and ``namespace``. A template is untrusted code from wherever the model came from:
the sandbox refuses attribute access outside it (``''.__class__``) with an error where
jinja alone would print nothing, and every failure is a
:class:`~llmcore.errors.TokenizerError` naming where the template came from.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from llmcore.errors import TokenizerError

#: Files of an HF folder that may hold the template, in the order transformers reads them.
TEMPLATE_FILE = "chat_template.jinja"
TOKENIZER_CONFIG = "tokenizer_config.json"


class ChatTemplateRenderer:
    """Renders conversations with one Jinja chat template.

    Args:
        source: the template text.
        where: where it came from (a file, a GGUF key), named in every error.
        special_tokens: the template variables transformers passes from the tokenizer's
            special tokens map (``bos_token``, ``eos_token``, ...).
    """

    def __init__(self, source: str, where: str, special_tokens: dict[str, str] | None = None):
        if not isinstance(source, str) or not source:
            raise TokenizerError(f"{where}: a chat template must be a non-empty string")
        self.source = source
        self.where = where
        self.special_tokens = dict(special_tokens or {})
        try:
            self._template = _environment().from_string(source)
        except _jinja().TemplateError as exc:
            raise TokenizerError(f"{where}: the chat template does not parse: {exc}") from None

    def render(self, messages: Sequence[dict], add_generation_prompt: bool = False, **extra) -> str:
        """The conversation ``messages`` as the template writes it: what transformers'
        ``apply_chat_template(messages, tokenize=False, ...)`` returns."""
        variables = {**self.special_tokens, **extra}
        try:
            return self._template.render(
                messages=_plain(list(messages)),
                tools=None,
                documents=None,
                add_generation_prompt=bool(add_generation_prompt),
                **_plain(variables),
            )
        except _jinja().exceptions.SecurityError as exc:
            raise TokenizerError(
                f"{self.where}: the chat template reached outside its sandbox and was refused: {exc}"
            ) from None
        except _jinja().TemplateError as exc:
            raise TokenizerError(f"{self.where}: the chat template failed: {exc}") from None
        except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
            raise TokenizerError(
                f"{self.where}: the chat template failed: {type(exc).__name__}: {exc}"
            ) from None


def read_chat_template(folder: str | Path) -> str | None:
    """The chat template of an HF folder, or None when it has none.

    ``chat_template.jinja`` (where transformers 5 saves it) wins over ``tokenizer_config.json``'s
    ``chat_template``, which is a string or a list of named templates (the one named
    ``default`` is taken)."""
    folder = Path(folder)
    jinja_file = folder / TEMPLATE_FILE
    if jinja_file.is_file():
        try:
            return jinja_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise TokenizerError(f"{jinja_file}: cannot read the chat template: {exc}") from None
    cfg = _tokenizer_config(folder)
    value = cfg.get("chat_template")
    where = f"{folder / TOKENIZER_CONFIG}: chat_template"
    if value is None or isinstance(value, str):
        return value or None
    if isinstance(value, list):
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
        if "default" not in named or not isinstance(named["default"], str):
            raise TokenizerError(
                f"{where}: a list of templates needs one named 'default'; found "
                f"{sorted(str(n) for n in named)}"
            )
        return named["default"]
    raise TokenizerError(f"{where}: must be a string or a list of named templates")


def read_special_tokens_map(folder: str | Path) -> dict[str, str]:
    """The special-token variables a template sees (``bos_token``, ``eos_token``, ...),
    from ``tokenizer_config.json`` as transformers reads them."""
    cfg = _tokenizer_config(Path(folder))
    out = {}
    for key in ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token"):
        value = cfg.get(key)
        if isinstance(value, dict):  # a serialised AddedToken
            value = value.get("content")
        if isinstance(value, str):
            out[key] = value
    return out


def special_tokens_of(tokenizer, stop_ids: Sequence[int] = ()) -> dict[str, str]:
    """``bos_token`` / ``eos_token`` from a tokenizer's special tokens: its ``bos_id`` and
    the first of ``stop_ids`` (else its ``eot_id``), when it names them."""
    by_id = {i: s for s, i in (getattr(tokenizer, "special_tokens", None) or {}).items()}
    out = {}
    bos = getattr(tokenizer, "bos_id", None)
    eos = stop_ids[0] if stop_ids else getattr(tokenizer, "eot_id", None)
    if bos in by_id:
        out["bos_token"] = by_id[bos]
    if eos in by_id:
        out["eos_token"] = by_id[eos]
    return out


def _tokenizer_config(folder: Path) -> dict:
    path = folder / TOKENIZER_CONFIG
    if not path.is_file():
        return {}
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TokenizerError(f"{path}: cannot read: {exc}") from None
    if not isinstance(cfg, dict):
        raise TokenizerError(f"{path}: must hold a JSON object")
    return cfg


def _jinja():
    try:
        import jinja2
        import jinja2.ext
        import jinja2.sandbox
    except ImportError:  # pragma: no cover - jinja2 is a dependency
        raise TokenizerError(
            "rendering a chat template needs jinja2 (pip install jinja2)"
        ) from None
    return jinja2


_ENV = None


def _environment():
    """The one sandboxed environment, configured as transformers configures its own."""
    global _ENV
    if _ENV is not None:
        return _ENV
    jinja2 = _jinja()

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        # jinja's own tojson escapes HTML characters; templates expect plain JSON
        return json.dumps(
            x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
        )

    def strftime_now(fmt):
        return datetime.now().strftime(fmt)

    class Namespace(jinja2.utils.Namespace):
        """A namespace refusing underscore names, so no template stores a way out."""

        def __init__(*args, **kwargs):
            self, args = args[0], args[1:]
            attrs = dict(*args, **kwargs)
            for name in attrs:
                _check_name(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name, value):
            _check_name(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

    def _check_name(name):
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(
                f"a namespace cannot hold the underscore name {name!r}"
            )

    class Sandbox(jinja2.sandbox.ImmutableSandboxedEnvironment):
        def unsafe_undefined(self, obj, attribute):
            # jinja's sandbox yields an undefined value that prints as nothing; an attempt
            # to reach outside is refused outright instead, so it cannot pass unnoticed
            raise jinja2.exceptions.SecurityError(
                f"access to attribute {attribute!r} of a {type(obj).__name__} is unsafe"
            )

    env = Sandbox(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[jinja2.ext.loopcontrols, _generation_extension()],
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    env.globals["dict"] = _Dict()
    env.globals["namespace"] = Namespace
    _ENV = env
    return env


class _Dict:
    """``dict(...)`` for templates, without the type object itself (no way to its class)."""

    def __call__(self, *args, **kwargs):
        return dict(*args, **kwargs)

    def fromkeys(self, *args, **kwargs):
        return dict.fromkeys(*args, **kwargs)


def _generation_extension():
    jinja2 = _jinja()

    class Generation(jinja2.ext.Extension):
        """``{% generation %}...{% endgeneration %}`` (transformers' assistant-mask tags):
        rendered as its body; llmcore finds the assistant's pieces by rendering prefixes."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return jinja2.nodes.Scope(body).set_lineno(lineno)

    return Generation


def _plain(value):
    """``value`` rebuilt from plain JSON types only, so nothing the template sees carries
    methods the sandbox does not know to refuse."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    return str(value)
