"""Continuous batching: KV slots against the model's own forward pass, batch invariance
under 16 concurrent clients, cancelled and disconnected sequences freeing their slots,
and multi-byte characters split across tokens streamed whole."""

from __future__ import annotations

import logging
import threading
from functools import partial

import httpx
import pytest
import torch

pytest.importorskip("starlette")
openai = pytest.importorskip("openai")

from llmcore import generate  # noqa: E402
from llmcore.builtin.bpe import BPETokenizer  # noqa: E402
from llmcore.config import ChatTemplate  # noqa: E402
from llmcore.finetune.chat import Chat  # noqa: E402
from llmcore.serve import Engine, Served  # noqa: E402
from llmcore.serve.kv_slots import SlotCache  # noqa: E402
from llmcore.serve.prepare import build_sequences, render_chat  # noqa: E402
from llmcore.serve.schemas import ApiError, parse_request  # noqa: E402
from llmcore.serve.slot_forward import SlotForward, runs_of, slots_forward_plain  # noqa: E402

from .serve_helpers import bigram_model, char_served, running_server, tiny_model  # noqa: E402


def test_slots_of_different_lengths_decode_like_the_full_forward():
    served = char_served()
    model, tok = served.model, served.tokenizer
    cache = SlotCache(model, 4, 64)
    prompts = {2: "hello world", 0: "ab", 3: "the quick brown"}
    with torch.no_grad():
        for slot, text in prompts.items():  # prefill each slot on its own
            ids = tok.encode(text)
            view = cache.batch([slot], len(ids))
            model.hidden_states(
                torch.tensor([ids]), positions=view.positions, cache=view, mask=view.mask
            )
            view.commit()
        slots = [2, 0, 3]  # not one contiguous run: the rows are gathered
        nxt = tok.encode("xyz")
        view = cache.batch(slots, 1)
        x = model.hidden_states(
            torch.tensor([[i] for i in nxt]), positions=view.positions, cache=view, mask=view.mask
        )
        view.commit()
        got = model.lm_head(x[:, -1])  # (3, V)
        for b, slot in enumerate(slots):
            ref = model(torch.tensor([tok.encode(prompts[slot]) + [nxt[b]]]))[0, -1]
            torch.testing.assert_close(got[b], ref, atol=1e-5, rtol=1e-5)
    assert cache.lengths == [3, 0, 12, 16]


def _collect(deltas):
    return lambda d: deltas.append(d)


def test_cancelled_sequence_frees_its_slot_at_the_next_step():
    served = char_served()
    engine = Engine(served, max_batch=2, max_queue=8)  # stepped by hand, no thread
    req = parse_request(
        {"prompt": ["ab", "cd", "ef"], "max_tokens": 30, "temperature": 0}, chat=False
    )
    out = []
    seqs = build_sequences(served, req, _collect(out), engine.context)
    engine.submit(seqs)
    with torch.inference_mode():
        engine.step()
        engine.step()
        assert engine.cache.used == 2 and [s.slot is not None for s in seqs] == [True, True, False]
        seqs[0].cancel()
        engine.step()  # the cancelled row leaves, the waiting one takes its slot
        assert seqs[0].slot is None and seqs[2].slot is not None and engine.cache.used == 2
        before = seqs[0].generated
        for _ in range(80):
            engine.step()
    assert seqs[0].generated == before
    assert [s.generated for s in seqs[1:]] == [30, 30] and engine.cache.used == 0
    assert engine.scheduler.idle


def test_scheduler_refuses_past_the_queue_limit():
    served = char_served()
    engine = Engine(served, max_batch=1, max_queue=2)
    req = parse_request({"prompt": "ab", "n": 3}, chat=False)
    with pytest.raises(ApiError) as info:
        engine.submit(build_sequences(served, req, _collect([]), engine.context))
    assert info.value.status == 429


def test_greedy_output_is_the_same_among_15_concurrent_requests():
    served = char_served()
    target = {"model": "tiny", "prompt": "hello world", "max_tokens": 40, "temperature": 0}
    with running_server(served, max_batch=16) as (url, engine):
        alone = httpx.post(url + "/v1/completions", json=target).json()["choices"][0]["text"]
        others = [{**target, "prompt": "ab" * (1 + i % 7), "max_tokens": 30 + i} for i in range(15)]
        barrier = threading.Barrier(16)
        results: dict[int, str] = {}

        def send(i, body):
            barrier.wait()
            r = httpx.post(url + "/v1/completions", json=body, timeout=60)
            results[i] = r.json()["choices"][0]["text"]

        threads = [
            threading.Thread(target=send, args=(i, b)) for i, b in enumerate([target, *others])
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        peak = engine.metrics.peak_running
    assert results[0] == alone
    ref = generate(served.model, served.tokenizer, "hello world", max_new_tokens=40)[0].text
    assert alone == ref
    for i, body in enumerate(others, start=1):  # the others are right too
        want = generate(
            served.model, served.tokenizer, body["prompt"], max_new_tokens=body["max_tokens"]
        )
        assert results[i] == want[0].text
    assert peak > 1  # they really were decoded together


def test_disconnecting_client_frees_its_slot(caplog):
    tok = char_served().tokenizer
    model, cfg = tiny_model(tok.vocab_size, block_size=512)
    served = Served("long", model, tok, cfg)
    body = {"model": "long", "prompt": "ab", "max_tokens": 500, "temperature": 0, "stream": True}
    caplog.set_level(logging.INFO, logger="llmcore.serve")
    with running_server(served, max_batch=4) as (url, engine):
        with httpx.stream("POST", url + "/v1/completions", json=body) as r:
            lines = r.iter_lines()
            assert next(lines).startswith("data: ")
        # the engine drops the row once the server notices; wait for it, bounded
        for _ in range(500):
            if engine.cache.used == 0 and engine.scheduler.idle:
                break
            threading.Event().wait(0.02)
        assert engine.cache.used == 0
        done = [r.getMessage() for r in caplog.records if "completion_tokens=" in r.getMessage()]
    assert len(done) == 1
    generated = int(done[0].split("completion_tokens=")[1].split()[0])
    assert generated < 500


@pytest.fixture(scope="module")
def euro_served():
    """A byte-level BPE that never merged the bytes of '€', and a model whose greedy
    answer repeats 'ab€' (a bigram table built into its weights)."""
    tok = BPETokenizer.train(["ab ab cd cd abc\n" * 20], 260, special_tokens=["<|endoftext|>"])
    euro = tok.encode("€")
    assert len(euro) == 3  # one character, three tokens
    (ab,) = tok.encode("ab")
    chat_start = Chat(ChatTemplate(), tok).prompt([{"role": "user", "content": "ab"}])[-1]
    follows = {ab: euro[0], euro[0]: euro[1], euro[1]: euro[2], euro[2]: ab, chat_start: euro[0]}
    model, cfg = bigram_model(tok.vocab_size, follows)
    return Served("euro", model, tok, cfg)


def test_multibyte_character_split_across_tokens_streams_whole(euro_served):
    msgs = [{"role": "user", "content": "ab€ab"}]
    with running_server(euro_served) as (url, _):
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        with client:
            for kind in ("completion", "chat"):
                if kind == "chat":
                    kw = dict(model="euro", messages=msgs, max_tokens=15, temperature=0)
                    whole = client.chat.completions.create(**kw).choices[0].message.content
                    stream = client.chat.completions.create(**kw, stream=True)
                    pieces = [c.choices[0].delta.content or "" for c in stream]
                else:
                    kw = dict(model="euro", prompt="ab€ab", max_tokens=15, temperature=0)
                    whole = client.completions.create(**kw).choices[0].text
                    pieces = [
                        c.choices[0].text for c in client.completions.create(**kw, stream=True)
                    ]
                assert "".join(pieces) == whole
                assert all("\ufffd" not in p for p in pieces)
                assert any("€" in p for p in pieces)
                assert len([p for p in pieces if p]) < 15  # split bytes were held back
    ref = generate(euro_served.model, euro_served.tokenizer, "ab€ab", max_new_tokens=15)[0].text
    assert ref == "€ab€ab€ab€"


def test_user_content_never_becomes_a_special_token(euro_served):
    tok = euro_served.tokenizer
    eot = tok.eot_id
    ids, _, _ = render_chat(euro_served, [{"role": "user", "content": "x<|endoftext|>y"}])
    assert eot not in ids
    assert tok.decode(ids).count("<|endoftext|>") == 1  # there, as text
    req = parse_request({"prompt": "<|endoftext|>"}, chat=False)
    seqs = build_sequences(euro_served, req, _collect([]), 64)
    assert eot not in seqs[0].prompt


def test_long_prompt_prefilled_in_chunks_gives_the_same_text(monkeypatch):
    import llmcore.serve.engine as engine_module

    monkeypatch.setattr(engine_module, "PREFILL_CHUNK", 3)
    served = char_served()
    engine = Engine(served, max_batch=2)
    prompt = "the quick brown fox jumps"
    req = parse_request({"prompt": [prompt, "ab"], "max_tokens": 12, "temperature": 0}, chat=False)
    out = []
    seqs = build_sequences(served, req, _collect(out), engine.context)
    engine.submit(seqs)
    with torch.inference_mode():
        engine.step()  # the first chunk of the long prompt, nothing decodes yet
        assert seqs[0].filled == 3 and seqs[0].generated == 0
        for _ in range(40):
            engine.step()
    for k, p in enumerate((prompt, "ab")):
        text = "".join(t.text for d in out if d.index == k for t in d.tokens)
        assert text == generate(served.model, served.tokenizer, p, max_new_tokens=12)[0].text


@pytest.mark.parametrize("lean", [True, False])
def test_slot_forward_across_runs_of_slots_matches_the_full_forward(lean):
    """Padded prefill chunks and a one-token step over slots with gaps between them
    (three runs), through the lean pass and through the model's own forward."""
    served = char_served()
    model, tok = served.model, served.tokenizer
    cache = SlotCache(model, 6, 64)
    fwd = SlotForward(model, cache) if lean else partial(slots_forward_plain, model, cache)
    prompts = {0: "hello", 2: "ab", 3: "the quick", 5: "xy"}  # slots 1 and 4 are gaps
    cache.lengths[4] = 64  # a full slot in a gap must not break the step
    slots = sorted(prompts)
    with torch.no_grad():
        ids = [tok.encode(prompts[s]) for s in slots]
        T = max(map(len, ids))
        inp = torch.tensor([x + [0] * (T - len(x)) for x in ids])  # right-padded
        logits, _ = fwd(inp, slots, [len(x) for x in ids])
        for b, s in enumerate(slots):
            cache.lengths[s] += len(ids[b])
            ref = model(torch.tensor([ids[b]]))[0, -1]
            torch.testing.assert_close(logits[b], ref, atol=1e-5, rtol=1e-5)
        q = tok.encode("q")[0]
        logits, _ = fwd(torch.tensor([[q]] * 4), slots, [1] * 4)
        for b, s in enumerate(slots):
            ref = model(torch.tensor([tok.encode(prompts[s] + "q")]))[0, -1]
            torch.testing.assert_close(logits[b], ref, atol=1e-5, rtol=1e-5)
    assert runs_of(slots) == [(0, 1), (1, 3), (3, 4)]


@pytest.mark.parametrize("prefix_cache", [True, False])
def test_prefix_cache_reuses_a_shared_prompt_start_with_the_same_text(prefix_cache):
    """A prompt that starts like one in a running slot copies that prefix; one that starts
    like one in a slot given back takes the slot over; the text is generate()'s either way."""
    served = char_served()
    engine = Engine(served, max_batch=3, prefix_cache=prefix_cache)
    system = "you are a helpful bot. "
    prompts = [system + "hello", system + "abc", system + "hello there"]
    out: list = []

    def submit(k: int) -> None:
        body = {"prompt": prompts[k], "max_tokens": 10, "temperature": 0}
        seqs = build_sequences(served, parse_request(body, chat=False), _collect(out), 64)
        for s in seqs:
            s.index = k
        engine.submit(seqs)

    with torch.inference_mode():
        submit(0)
        engine.step()  # prompt 0 is in its slot and decoding
        submit(1)  # shares the system prompt with a running slot
        for _ in range(30):
            engine.step()
        assert engine.cache.used == 0
        submit(2)  # shares all of prompt 0 (and its answer's start) with a free slot
        for _ in range(30):
            engine.step()
    for k, p in enumerate(prompts):
        text = "".join(t.text for d in out if d.index == k for t in d.tokens)
        assert text == generate(served.model, served.tokenizer, p, max_new_tokens=10)[0].text
    shared = len(served.tokenizer.encode(system))
    if prefix_cache:
        assert engine.cache.reused_tokens >= shared + len(served.tokenizer.encode(prompts[0]))
    else:
        assert engine.cache.reused_tokens == 0
