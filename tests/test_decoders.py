"""Decoder plugins: registration, greedy ties, beam search parameters and its invariants
(the HF comparison is in test_generate_hf.py)."""

from __future__ import annotations

import pytest
import torch

from llmcore import build_model, generate, plugins
from llmcore.builtin.char_tokenizer import CharTokenizer
from llmcore.builtin.decoders import Beam, Greedy
from llmcore.config import Component, ModelConfig
from llmcore.errors import GenerationError

TOK = CharTokenizer(sorted(set("abcdefghij")))


def _model():
    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=TOK.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=16, init_std=0.5
    )
    return build_model(cfg).eval()


def test_registered():
    assert {"greedy", "multinomial", "beam"} <= set(plugins.available("decoder"))
    assert isinstance(plugins.create("decoder", "beam", width=3), Beam)


def test_greedy_takes_the_first_of_tied_maxima():
    logits = torch.tensor([[0.0, 2.0, 2.0, 1.0], [5.0, 5.0, 5.0, 5.0]])
    assert Greedy()(logits).tolist() == [1, 0]


@pytest.mark.parametrize("kw", [dict(width=0), dict(width=2.5), dict(early_stopping="sometimes")])
def test_beam_bad_params(kw):
    with pytest.raises(GenerationError):
        Beam(**kw)


def test_beam_is_not_a_per_step_decoder():
    with pytest.raises(GenerationError, match="through generate"):
        Beam()(torch.zeros(1, 4))


def test_beam_width_one_is_greedy_and_scores_are_mean_logprobs():
    model = _model()
    greedy = generate(model, TOK, "abc", max_new_tokens=12, logprobs=True)[0]
    beam = generate(model, TOK, "abc", max_new_tokens=12, decoder=Beam(width=1))[0]
    assert beam.ids == greedy.ids
    # length_penalty 1: the score is the sum of log-probs over the generated length
    assert beam.score == pytest.approx(sum(greedy.logprobs) / 12, abs=1e-4)


@pytest.mark.parametrize("width,lp", [(2, 1.0), (4, 0.5), (3, -1.0)])
def test_beam_score_is_the_length_penalised_log_probability(width, lp):
    """The returned score, recomputed from a full forward pass over prompt + answer."""
    model = _model()
    prompt = TOK.encode("abc")
    g = generate(model, TOK, "abc", max_new_tokens=10, decoder=Beam(width, lp))[0]
    with torch.no_grad():
        logits = model(torch.tensor([prompt + g.ids]))[0, len(prompt) - 1 : -1]
    total = torch.log_softmax(logits, -1).gather(1, torch.tensor(g.ids)[:, None]).sum()
    assert g.score == pytest.approx(float(total) / len(g.ids) ** lp, abs=1e-4)


def test_beam_from_config_component():
    from llmcore.config import load_config

    cfg = load_config("shakespeare-char")
    cfg.generate.samplers = []
    cfg.generate.decoder = Component("beam", {"width": 3, "length_penalty": 0.8})
    g = generate(_model(), TOK, "ab", config=cfg, max_new_tokens=6)[0]
    assert len(g.ids) == 6 and g.score is not None


class FullRecomputeSearch:
    """A search decoder as a third party would write one: greedy over full forward passes
    (no KV cache), scored by the sum of the chosen tokens' log-probabilities."""

    runs_search = True

    def __init__(self) -> None:
        self.prompts: list[list[int]] = []

    def search(self, model, prompt_ids, *, max_new_tokens, samplers, stop_ids, generator):
        self.prompts.append(list(prompt_ids))
        ids, new, score = list(prompt_ids), [], 0.0
        for _ in range(max_new_tokens):
            logp = torch.log_softmax(model(torch.tensor([ids]))[0, -1].float(), -1)
            t = int(logp.argmax())
            if t in stop_ids:
                break
            ids.append(t)
            new.append(t)
            score += float(logp[t])
        return new, score


def test_a_declared_search_decoder_runs_the_whole_search_itself():
    model = _model()
    greedy = generate(model, TOK, ["abc", "j"], max_new_tokens=10, logprobs=True)
    dec = FullRecomputeSearch()
    found = generate(model, TOK, ["abc", "j"], max_new_tokens=10, decoder=dec)
    assert dec.prompts == [TOK.encode("abc"), TOK.encode("j")]  # once per prompt
    for g, s in zip(greedy, found):
        assert s.ids == g.ids and s.text == g.text
        assert s.score == pytest.approx(sum(g.logprobs), abs=1e-4)
    # the engine still cuts the search's ids at a stop string
    stop = greedy[0].text[3:5]
    cut = generate(model, TOK, "abc", max_new_tokens=10, decoder=dec, stop=stop)[0]
    assert cut.text == greedy[0].text[: greedy[0].text.index(stop)]
    assert cut.finish_reason == "stop"


def test_a_search_method_alone_does_not_make_a_search_decoder():
    class StepWithSearch(Greedy):
        def search(self, *args, **kwargs):
            raise AssertionError("a step decoder's search must not be called")

    model = _model()
    plain = generate(model, TOK, "abc", max_new_tokens=8)[0]
    assert (
        generate(model, TOK, "abc", max_new_tokens=8, decoder=StepWithSearch())[0].ids == plain.ids
    )


def test_a_function_is_a_step_decoder():
    model = _model()
    plain = generate(model, TOK, "abc", max_new_tokens=8)[0]
    first = generate(model, TOK, "abc", max_new_tokens=8, decoder=lambda x, g: x.argmax(-1))[0]
    assert first.ids == plain.ids


@pytest.mark.parametrize(
    "decoder,match",
    [
        (type("NoSearch", (), {"runs_search": True})(), "has no search"),
        (type("Vague", (), {"runs_search": "yes", "search": None})(), "True or False"),
        (object(), "not callable"),
    ],
)
def test_a_decoder_that_breaks_its_declared_form_is_refused(decoder, match):
    with pytest.raises(GenerationError, match=match):
        generate(_model(), TOK, "abc", max_new_tokens=2, decoder=decoder)
