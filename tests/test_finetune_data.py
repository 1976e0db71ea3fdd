"""Chat rendering, answer masks and packing."""

from __future__ import annotations

import pytest
import torch

from llmcore.builtin.char_tokenizer import CharTokenizer
from llmcore.config import ChatTemplate, load_config
from llmcore.errors import ConfigError, DataError
from llmcore.finetune.chat import Chat
from llmcore.finetune.data import (
    IGNORE,
    Record,
    Skipped,
    pack_sft,
    pad_responses,
    pad_sft,
    preference_examples,
    sft_examples,
)
from llmcore.finetune.losses import sft_loss
from llmcore.model import build_model

TOK = CharTokenizer(sorted(set("abcdefghijklmnopqrstuvwxyzQAS:,. \n")))


def chat(**template) -> Chat:
    return Chat(ChatTemplate(**template), TOK)


def test_render_marks_exactly_the_assistant_answers_and_their_end():
    c = chat(system="S: ")
    msgs = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "yo"},
        {"role": "user", "content": "and"},
        {"role": "assistant", "content": "no"},
    ]
    r = c.render(msgs)
    text = "S: be brief\nQ: hi\nA: yo\nQ: and\nA: no\n"
    assert r.ids == TOK.encode(text)
    marked = "".join(ch for ch, keep in zip(text, r.train) if keep)
    assert marked == "yo\nno\n"
    assert c.prompt([{"role": "user", "content": "hi"}]) == TOK.encode("Q: hi\nA: ")


def test_template_markers_outside_the_alphabet_are_a_config_error():
    with pytest.raises(ConfigError, match=r"tokenizer.chat_template.user: '<\|user\|>'"):
        chat(user="<|user|>")


def test_truncation_that_leaves_no_answer_skips_and_counts():
    recs = [
        Record({"prompt": "a" * 40, "response": "b"}, "f.jsonl:1"),
        Record({"prompt": "a", "response": "bc"}, "f.jsonl:2"),
        Record({"messages": [{"role": "user", "content": "x"}]}, "f.jsonl:3"),
    ]
    skipped = Skipped()
    out = sft_examples(recs, chat(), max_len=20, skipped=skipped)
    assert len(out) == 1 and skipped.truncated == 2
    assert skipped.where == ["f.jsonl:1", "f.jsonl:3"]
    with pytest.raises(DataError, match=r"f.jsonl:9: field 'chosen' is missing"):
        preference_examples(
            [Record({"prompt": "a", "rejected": "b"}, "f.jsonl:9")], chat(), 20, skipped
        )
    with pytest.raises(DataError, match=r"f.jsonl:4: messages\[0\].role: 'bot'"):
        sft_examples(
            [Record({"messages": [{"role": "bot", "content": "x"}]}, "f.jsonl:4")],
            chat(),
            20,
            skipped,
        )


def tiny_model(position: str = "learned"):
    torch.manual_seed(0)
    cfg = load_config(
        None,
        [
            "model.n_layer=2",
            "model.n_head=2",
            "model.n_embd=32",
            "model.block_size=64",
            f"model.position={position}",
        ],
    )
    return build_model(cfg, TOK.vocab_size).eval()


@pytest.mark.parametrize("position", ["learned", "rope"])
def test_packed_examples_see_only_themselves(position):
    model = tiny_model(position)
    c = chat()
    recs = [
        Record({"prompt": p, "response": r}, f"f:{i}")
        for i, (p, r) in enumerate([("hi", "yo there"), ("what is it", "a cat"), ("q", "z")])
    ]
    examples = sft_examples(recs, c, 63, Skipped())
    x, y, pos, mask = pack_sft(examples, 50)
    assert x.shape[0] == 1  # all three fit in one row
    packed = model(x, positions=pos, mask=mask)
    at = 0
    for e in examples:
        n = len(e.ids) - 1
        alone = model(torch.tensor([e.ids[:-1]]))
        torch.testing.assert_close(packed[:, at : at + n], alone, rtol=1e-4, atol=1e-5)
        at += n
    px, py = pad_sft(examples)
    torch.testing.assert_close(sft_loss(packed, y), sft_loss(model(px), py), rtol=1e-4, atol=1e-5)
    assert (y != IGNORE).sum() == (py != IGNORE).sum()


def test_pad_responses_marks_the_answer_targets():
    x, y, last = pad_responses([[1, 2, 3], [4]], [[5, 6], [7, 8, 9]])
    assert x.tolist() == [[1, 2, 3, 5], [4, 7, 8, 0]]
    assert y.tolist() == [[-1, -1, 5, 6], [7, 8, 9, -1]]
    assert last.tolist() == [4, 3]


MARKER_JINJA = (
    "{% for m in messages %}{{ {'system': 'S: ', 'user': 'Q: ', 'assistant': 'A: '}[m['role']] }}"
    "{{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}A: {% endif %}"
)


def test_a_models_jinja_template_renders_messages_records_like_the_marker_template():
    """A Jinja template writing llmcore's marker format gives the marker template's ids and
    targets, through the same SFT and preference data path."""
    from llmcore.checkpoint import LoadedCheckpoint
    from llmcore.finetune.chat import chat_for
    from llmcore.finetune.jinja_chat import TemplateChat

    cfg = load_config(None)
    loaded = LoadedCheckpoint("<model>", cfg, None, TOK, 0, chat_template=MARKER_JINJA)
    jinja, marker = chat_for(loaded), chat(system="S: ")
    assert isinstance(jinja, TemplateChat)
    msgs = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "yo"},
        {"role": "user", "content": "and"},
        {"role": "assistant", "content": "no"},
    ]
    records = [Record({"messages": msgs}, "d:1"), Record({"prompt": "hi", "response": "yo"}, "d:2")]
    got = sft_examples(records, jinja, 100, Skipped())
    want = sft_examples(records, marker, 100, Skipped())
    assert [(e.ids, e.train) for e in got] == [(e.ids, e.train) for e in want]
    pair = [Record({"prompt": "hi", "chosen": "yes", "rejected": "no"}, "d:3")]
    (a,) = preference_examples(pair, jinja, 100, Skipped())
    (b,) = preference_examples(pair, marker, 100, Skipped())
    assert (a.prompt, a.chosen, a.rejected) == (b.prompt, b.chosen, b.rejected)
    assert jinja.end_ids == marker.end_ids == TOK.encode("\n")
