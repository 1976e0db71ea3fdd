"""``llmcore eval RUN --data FILE``: loss and perplexity on any text."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from llmcore.checkpoint import load_checkpoint
from llmcore.cli import main
from llmcore.errors import DataError
from llmcore.evaluate import evaluate, token_ids
from llmcore.train import train
from tests.test_train import one_thread, tiny  # noqa: F401 - the fixture is used by name


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("eval")
    torch.set_num_threads(1)
    return train(tiny(tmp, "train.max_iters=10"), out_dir=tmp / "run", progress=False)


def test_eval_equals_full_logits_cross_entropy(run, tmp_path):
    text = tmp_path / "held_out.txt"
    text.write_text("the and of to in a is that for it as was with be by on not he this\n" * 7)
    res = evaluate(run, text, batch_size=3, device="cpu")
    loaded = load_checkpoint(run)
    ids = torch.tensor(loaded.tokenizer.encode(text.read_text()))
    T = loaded.config.model.block_size
    nll, n = 0.0, 0
    with torch.no_grad():  # reference: one window at a time, the model's plain logits
        for s in range(0, len(ids) - 1, T):
            x = ids[s : s + T][None]
            y = ids[s + 1 : s + 1 + T]
            x = x[:, : len(y)]
            logits = loaded.model(x)[0]
            nll += F.cross_entropy(logits, y, reduction="sum").item()
            n += len(y)
    assert res.tokens == n == len(ids) - 1
    assert res.loss == pytest.approx(nll / n, rel=1e-5)
    assert res.perplexity == pytest.approx(math.exp(nll / n), rel=1e-5)


def test_cli_prints_loss_and_perplexity(run, tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("he is not the one to be by\n" * 20)
    assert main(["eval", str(run), "--data", str(text), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["perplexity"] == pytest.approx(math.exp(out["loss"]))
    assert out["tokens"] > 0


def test_bad_eval_inputs(run, tmp_path, capsys):
    assert main(["eval", str(run), "--data", str(tmp_path / "missing.txt")]) == 1
    assert "missing.txt: data file not found" in capsys.readouterr().err
    one = tmp_path / "one.txt"
    one.write_text("a")
    loaded = load_checkpoint(run)
    assert len(token_ids(loaded.tokenizer, one)) == 1
    with pytest.raises(DataError, match="fewer than 2 tokens"):
        evaluate(run, one, device="cpu")
    assert main(["eval", str(tmp_path), "--data", str(one)]) == 1
    assert "not a run or checkpoint folder" in capsys.readouterr().err
