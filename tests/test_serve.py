"""``llmcore serve`` through the real ``openai`` client: chat, completions, streaming,
``n``, ``stop``, ``seed``, log-probabilities, echo and the model list, each checked
against llmcore's own generation engine or the model's forward pass."""

from __future__ import annotations

import httpx
import pytest
import torch

pytest.importorskip("starlette")
openai = pytest.importorskip("openai")

from llmcore import generate  # noqa: E402
from llmcore.config import ChatTemplate  # noqa: E402
from llmcore.finetune.chat import Chat  # noqa: E402

from .serve_helpers import char_served, running_server  # noqa: E402


@pytest.fixture(scope="module")
def served():
    return char_served()


@pytest.fixture(scope="module")
def server(served):
    with running_server(served, max_batch=8) as (url, engine):
        yield url, engine


@pytest.fixture(scope="module")
def client(server):
    with openai.OpenAI(base_url=server[0] + "/v1", api_key="unused", max_retries=0) as c:
        yield c


def _ref(served, prompt, n, **kw):
    return generate(served.model, served.tokenizer, prompt, max_new_tokens=n, **kw)[0]


def test_models_lists_the_served_model(client):
    ids = [m.id for m in client.models.list().data]
    assert ids == ["tiny"]


def test_completion_greedy_matches_generate(client, served):
    r = client.completions.create(model="tiny", prompt="hello", max_tokens=12, temperature=0)
    ref = _ref(served, "hello", 12)
    assert r.choices[0].text == ref.text
    assert r.choices[0].finish_reason == "length"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (5, 12)
    assert r.usage.total_tokens == 17


def test_completion_prompt_list_gives_a_choice_per_prompt(client, served):
    r = client.completions.create(model="tiny", prompt=["ab", "hello"], max_tokens=6, temperature=0)
    assert [c.text for c in r.choices] == [_ref(served, p, 6).text for p in ("ab", "hello")]
    assert r.usage.prompt_tokens == 7


def test_chat_uses_the_chat_template_and_ends_at_its_end_marker(client, served):
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"}]
    r = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=20, temperature=0)
    ids = Chat(ChatTemplate(), served.tokenizer).prompt(msgs)
    ref = _ref(served, ids, 20, stop=["\n"])
    choice = r.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == ref.text
    assert choice.finish_reason == ref.finish_reason
    assert r.usage.prompt_tokens == len(ids)


def test_stop_string_cuts_the_text(client, served):
    full = _ref(served, "hello", 30).text
    stop = full[6:8]
    r = client.completions.create(
        model="tiny", prompt="hello", max_tokens=30, temperature=0, stop=[stop]
    )
    assert r.choices[0].text == full[: full.find(stop)]
    assert r.choices[0].finish_reason == "stop"


def test_stream_joins_to_the_whole_answer(client, server):
    kw = dict(model="tiny", prompt="hello w", max_tokens=15, temperature=0)
    whole = client.completions.create(**kw).choices[0].text
    chunks = list(
        client.completions.create(**kw, stream=True, stream_options={"include_usage": True})
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 15
    # the wire format: SSE data lines ending with [DONE]
    with httpx.stream("POST", server[0] + "/v1/completions", json={**kw, "stream": True}) as r:
        lines = [x for x in r.iter_lines() if x]
    assert all(x.startswith("data: ") for x in lines) and lines[-1] == "data: [DONE]"


def test_chat_stream_first_delta_has_the_role(client):
    msgs = [{"role": "user", "content": "hi"}]
    chunks = list(
        client.chat.completions.create(model="tiny", messages=msgs, max_tokens=5, stream=True)
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_n_choices_with_seed_are_reproducible(client):
    kw = dict(model="tiny", prompt="ab", max_tokens=20, n=3, temperature=1.2)
    first = client.completions.create(**kw, seed=7, extra_body={"top_k": 20})
    again = client.completions.create(**kw, seed=7, extra_body={"top_k": 20})
    assert [c.index for c in first.choices] == [0, 1, 2]
    texts = [c.text for c in first.choices]
    assert texts == [c.text for c in again.choices]
    assert all(len(t) == 20 for t in texts)
    assert first.usage.completion_tokens == 60


def test_seeded_sampling_matches_generate(client, served):
    from llmcore import plugins

    kw = dict(model="tiny", prompt="ab", max_tokens=20, temperature=1.3, top_p=0.9, seed=11)
    text = client.completions.create(**kw).choices[0].text
    chain = [plugins.create("sampler", "temperature", temperature=1.3)]
    chain.append(plugins.create("sampler", "top_p", p=0.9))
    dec = plugins.create("decoder", "multinomial")
    ref = _ref(served, "ab", 20, samplers=chain, decoder=dec, seed=11)
    assert text == ref.text


def _forward_logprobs(model, ids):
    with torch.no_grad():
        return torch.log_softmax(model(torch.tensor([ids]))[0].float(), dim=-1)  # (T, V)


def test_chat_logprobs_match_the_forward_pass(client, served):
    msgs = [{"role": "user", "content": "hey"}]
    r = client.chat.completions.create(
        model="tiny", messages=msgs, max_tokens=8, temperature=0, logprobs=True, top_logprobs=3
    )
    tok = served.tokenizer
    prompt = Chat(ChatTemplate(), tok).prompt(msgs)
    content = r.choices[0].logprobs.content
    gen = [tok.encode(e.token)[0] for e in content]
    ref = _forward_logprobs(served.model, prompt + gen)
    for i, e in enumerate(content):
        row = ref[len(prompt) - 1 + i]
        assert e.logprob == pytest.approx(float(row[gen[i]]), abs=1e-4)
        vals, ids = row.topk(3)
        assert [tok.encode(t.token)[0] for t in e.top_logprobs] == ids.tolist()
        assert [t.logprob for t in e.top_logprobs] == pytest.approx(vals.tolist(), abs=1e-4)


def test_echo_with_logprobs_scores_the_prompt(client, served):
    tok = served.tokenizer
    r = client.completions.create(
        model="tiny", prompt="hello world", max_tokens=0, echo=True, logprobs=1
    )
    c = r.choices[0]
    assert c.text == "hello world" and c.finish_reason == "length"
    ids = tok.encode("hello world")
    ref = _forward_logprobs(served.model, ids)
    assert c.logprobs.tokens == list("hello world")
    assert c.logprobs.token_logprobs[0] is None
    want = [float(ref[i, ids[i + 1]]) for i in range(len(ids) - 1)]
    assert c.logprobs.token_logprobs[1:] == pytest.approx(want, abs=1e-4)
    assert c.logprobs.text_offset == list(range(len(ids)))


def test_health_and_metrics(server, client):
    client.completions.create(model="tiny", prompt="a", max_tokens=3, temperature=0)
    assert httpx.get(server[0] + "/health").json() == {"status": "ok"}
    text = httpx.get(server[0] + "/metrics").text
    for name in (
        "llmcore_queue_depth",
        "llmcore_running_batch",
        "llmcore_tokens_per_second",
        "llmcore_time_to_first_token_seconds_count",
    ):
        assert f"\n{name}" in "\n" + text
    count = [x for x in text.splitlines() if x.startswith("llmcore_requests_total ")][0]
    assert int(count.split()[1]) >= 1


def test_extra_samplers_and_unknown_fields_are_accepted(client):
    r = client.completions.create(
        model="tiny",
        prompt="ab",
        max_tokens=5,
        seed=1,
        presence_penalty=0.5,
        frequency_penalty=0.5,
        user="someone",
        extra_body={"min_p": 0.05, "typical_p": 0.9, "repetition_penalty": 1.1, "mystery": 3},
    )
    assert len(r.choices[0].text) == 5
