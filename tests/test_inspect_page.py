"""The inspect page: escaped against text with markup, and opened in headless Chromium
through the DevTools protocol (clicks, hovers, console errors, screenshots)."""

from __future__ import annotations

import base64
import contextlib
import html
import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from llmcore import build_model, trace
from llmcore.builtin.char_tokenizer import CharTokenizer
from llmcore.builtin.samplers import Temperature, TopK
from llmcore.config import Component, ModelConfig
from llmcore.inspect import page_html, sampler_view, write_page
from llmcore.inspect.page import page_data, script_json

TOK = CharTokenizer(sorted(set("abcdefghijklmnopqrstuvwxyz ,.!?<>/=&'\"\n")))
EVIL = "a </script><img src=x onerror=\"document.title='pwned'\"> & <b>bold</b>"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "inspect"


def tiny_model():
    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=TOK.vocab_size,
        block_size=96,
        n_layer=2,
        n_head=3,
        n_embd=24,
        position=Component("rope"),
    )
    return build_model(cfg).eval()


def make_page(path: Path, text: str, model=None) -> tuple[Path, object]:
    model = model or tiny_model()
    tr = trace(model, TOK, text)
    view = sampler_view(model, tr.ids, len(tr.ids) - 1, samplers=[Temperature(0.8), TopK(5)])
    return write_page(path, tr, view, TOK, title=text), tr


def test_markup_in_the_text_cannot_end_the_script_or_inject(tmp_path):
    page, _ = make_page(tmp_path / "p.html", EVIL)
    text = page.read_text(encoding="utf-8")
    # exactly the page's own two scripts close; the text's </script> is escaped
    assert text.count("</script>") == 2
    assert "<img" not in text and "<b>" not in text
    data = re.search(r'<script type="application/json" id="trace-data">(.*?)</script>', text, re.S)
    record = json.loads(data.group(1))
    assert "".join(t["text"] for t in record["tokens"]) == EVIL
    assert f"<title>{html.escape(EVIL)}</title>" in text


def test_script_json_escapes_what_ends_a_script():
    s = script_json({"t": "</script><!-- & \u2028"})
    assert "<" not in s and ">" not in s and "&" not in s and "\u2028" not in s
    assert json.loads(s) == {"t": "</script><!-- & \u2028"}


def test_page_works_for_a_bpe_tokenizer(tmp_path):
    from llmcore.builtin.bpe import BPETokenizer

    bpe = BPETokenizer.train(
        ["the cat sat on the mat\n" * 20 + "é ü 日本\n"], vocab_size=280, progress=False
    )
    torch.manual_seed(0)
    model = build_model(
        ModelConfig(vocab_size=bpe.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=16)
    )
    text = "the cat 日本 </script>"
    tr = trace(model.eval(), bpe, text)
    assert b"".join(t.bytes for t in tr.tokens) == text.encode("utf-8")
    assert [t.end - t.start for t in tr.tokens] == [len(t.bytes) for t in tr.tokens]
    record = page_data(tr, None, lambda i: bpe.decode([i]))
    assert len(record["tokens"]) == len(bpe.encode(text))
    assert page_html(record).count("</script>") == 2


# -- in a real browser ----------------------------------------------------------------------


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


needs_browser = pytest.mark.skipif(
    chromium_path() is None and not os.environ.get("CI"),
    reason="no chromium on this machine (under CI it must be installed: see .ci/run)",
)


class DevTools:
    """A minimal DevTools-protocol client: one page, commands in order, events collected."""

    def __init__(self, user_dir: Path) -> None:
        exe = chromium_path()
        assert exe, "chromium not found (install Debian's chromium)"
        self.proc = subprocess.Popen(
            [
                exe,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--remote-debugging-port=0",
                f"--user-data-dir={user_dir}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            self._connect(user_dir)
        except BaseException:
            self.proc.kill()
            self.proc.wait(timeout=30)
            raise
        self.events: list[dict] = []
        self.next_id = 0

    def _connect(self, user_dir: Path) -> None:
        port_file = user_dir / "DevToolsActivePort"
        for _ in range(300):
            if port_file.exists() and port_file.read_text().strip():
                break
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list").read())
        url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        from websockets.sync.client import connect

        self.stack = contextlib.ExitStack()
        self.ws = self.stack.enter_context(connect(url, max_size=None, open_timeout=30))

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=60))
            if msg.get("id") == self.next_id:
                assert "error" not in msg, msg
                return msg.get("result", {})
            self.events.append(msg)

    def wait_for(self, method: str) -> None:
        while not any(e.get("method") == method for e in self.events):
            self.events.append(json.loads(self.ws.recv(timeout=60)))

    def js(self, expr: str):
        out = self.call("Runtime.evaluate", expression=expr, returnByValue=True)
        assert "exceptionDetails" not in out, out
        return out["result"].get("value")

    def errors(self) -> list[dict]:
        bad = []
        for e in self.events:
            m, p = e.get("method"), e.get("params", {})
            thrown = m == "Runtime.exceptionThrown"
            console = m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert")
            logged = m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error"
            if thrown or console or logged:
                bad.append(p)
        return bad

    def screenshot(self, element_id: str, path: Path) -> None:
        r = self.js(
            f"(() => {{ const r = document.getElementById({element_id!r}).getBoundingClientRect();"
            " return [r.left + scrollX, r.top + scrollY, r.width, r.height]; })()"
        )
        clip = {"x": r[0], "y": r[1], "width": max(r[2], 1), "height": max(r[3], 1), "scale": 1}
        shot = self.call(
            "Page.captureScreenshot", format="png", clip=clip, captureBeyondViewport=True
        )
        path.write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        self.stack.close()
        self.proc.terminate()
        self.proc.wait(timeout=30)


@pytest.fixture
def browser(tmp_path):
    tools = DevTools(tmp_path / "chromium-profile")
    try:
        for domain in ("Runtime", "Log", "Page"):
            tools.call(f"{domain}.enable")
        tools.call(
            "Emulation.setDeviceMetricsOverride",
            width=1100,
            height=900,
            deviceScaleFactor=1,
            mobile=False,
        )
        yield tools
    finally:
        tools.close()


def open_page(browser: DevTools, page: Path) -> None:
    browser.call("Page.navigate", url=page.resolve().as_uri())
    browser.wait_for("Page.loadEventFired")


@needs_browser
def test_the_page_renders_and_responds_in_chromium(browser, tmp_path):
    text = "the quick brown fox jumps over the lazy dog."
    page, tr = make_page(tmp_path / "page.html", text)
    open_page(browser, page)
    assert browser.errors() == []
    assert browser.js("document.getElementById('token-count').textContent") == str(
        len(TOK.encode(text))
    )
    assert browser.js("document.querySelectorAll('.tok').length") == len(tr.tokens)
    assert browser.js("document.querySelectorAll('.attn-cell').length") == 2 * 3
    before = browser.js("document.getElementById('dist-head').textContent")
    assert f"position {len(tr.tokens) - 1}" in before
    browser.js("document.querySelectorAll('.tok')[3].click()")
    after = browser.js("document.getElementById('dist-head').textContent")
    assert after != before and "position 3" in after
    # the bars now list position 3's candidates, likeliest first
    shown = browser.js("[...document.querySelectorAll('#dist .bar-val')].map(e => e.textContent)")
    assert shown == [f"{p:.4f}" for p in tr.top_probs[3].tolist()]
    # zoom into layer 1 head 2, hover the zoomed map: the weight of one query and key
    browser.js('document.querySelector(\'.attn-cell[data-layer="1"][data-head="2"]\').click()')
    assert browser.js("document.getElementById('attn-zoom-title').textContent") == "layer 1, head 2"
    r = browser.js(
        "(() => { const r = document.getElementById('attn-zoom').getBoundingClientRect();"
        " return [r.left, r.top, r.width, r.height]; })()"
    )
    browser.js("document.getElementById('attn-zoom').scrollIntoView()")
    r = browser.js(
        "(() => { const r = document.getElementById('attn-zoom').getBoundingClientRect();"
        " return [r.left, r.top, r.width, r.height]; })()"
    )
    T = len(tr.tokens)
    q, k = T - 1, 2
    x, y = r[0] + (k + 0.5) * r[2] / T, r[1] + (q + 0.5) * r[3] / T
    browser.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
    hover = browser.js("document.getElementById('attn-hover').textContent")
    assert hover.endswith(f"{float(tr.attention[1, 2, q, k]):.4f}"), hover
    assert f"({q})" in hover and f"({k})" in hover
    assert browser.js("document.querySelectorAll('#lens-table tr').length") == 2 + 1
    assert browser.errors() == []
    out = EXAMPLES if os.environ.get("LLMCORE_WRITE_EXAMPLES") else tmp_path
    out.mkdir(parents=True, exist_ok=True)
    views = ["view-tokens", "view-dist", "view-attention", "view-lens", "view-sampler"]
    for view in views:
        browser.screenshot(view, out / f"{view.removeprefix('view-')}.png")
        assert (out / f"{view.removeprefix('view-')}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@needs_browser
def test_markup_in_the_text_shows_as_text_in_chromium(browser, tmp_path):
    page, tr = make_page(tmp_path / "evil.html", EVIL)
    open_page(browser, page)
    assert browser.errors() == []
    assert browser.js("document.title") == EVIL  # the onerror never ran
    assert browser.js("document.querySelectorAll('img, b').length") == 0
    assert (
        browser.js("[...document.querySelectorAll('.tok')].map(e => e.textContent).join('')")
        == EVIL
    )
