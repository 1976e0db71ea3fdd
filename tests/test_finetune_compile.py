"""Fine-tuning with ``train.compile: true``: the engine trains and evaluates through
``torch.compile`` (inductor), and follows the eager run of the same seed."""

from __future__ import annotations

import json
from string import ascii_letters

import pytest
import torch
from torch._dynamo.utils import counters

from llmcore.finetune.session import finetune_config
from llmcore.finetune.sft import run_sft
from tests.test_finetune import records
from tests.test_finetune_engine import NAMES, loop, sft_config, weights, world  # noqa: F401


# inductor imports torch.utils.mkldnn, which uses a torch.jit API that torch deprecates
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_compiled_sft_follows_the_eager_run(world, tmp_path):  # noqa: F811
    """The eager run is the reference (its update is checked against a plain torch step in
    test_finetune_engine); compiled kernels fuse and reorder float32 arithmetic, so the two
    agree to rounding, not bit for bit."""
    # answers of one length: every batch (4 of the 36 training examples, the 4 held out)
    # has one shape, so dynamo compiles one graph for training and one for evaluation
    data = tmp_path / "sft.jsonl"
    rows = [
        {"prompt": f"Who speaks {ascii_letters[i]}?", "response": NAMES[i % 3][:7]}
        for i in range(40)
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    runs = {}
    for compiled in (False, True):
        section = loop(2, 4, eval_interval=2, compile=compiled)
        path = sft_config(world, tmp_path / f"c{compiled}.yaml", section, data=str(data))
        graphs = counters["stats"]["unique_graphs"]
        runs[compiled], _ = run_sft(
            finetune_config(path), out_dir=tmp_path / f"run-{compiled}", progress=False
        )
        made = counters["stats"]["unique_graphs"] - graphs
        assert (made > 0) == compiled  # dynamo compiled the loss module only when asked
    torch._dynamo.reset()
    eager, compiled = records(runs[False]), records(runs[True])
    assert [r.keys() for r in compiled] == [r.keys() for r in eager]
    for a, b in zip(compiled, eager):
        for key in ("train_loss", "val_loss"):
            if key in b:
                assert a[key] == pytest.approx(b[key], abs=1e-5), (b["step"], key)
    one, two = weights(runs[True]), weights(runs[False])
    for k in two:
        torch.testing.assert_close(one[k], two[k], rtol=0, atol=1e-5)
