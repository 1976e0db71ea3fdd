"""The configured tokenizer: trained on the run's data when its params ask for it, with a
ConfigError naming ``tokenizer.<param>`` when a required train param is left out."""

from __future__ import annotations

from pathlib import Path

import pytest

import llmcore
from llmcore.builtin.bpe import BPETokenizer
from llmcore.components import validate_components
from llmcore.config import load_config
from llmcore.errors import ConfigError
from llmcore.tokenizers import load_tokenizer
from llmcore.tokenizers.build import check_train_params, trains_on_data
from llmcore.train.setup import build_tokenizer

SHAKESPEARE = Path(llmcore.__file__).parent / "datasets" / "tinyshakespeare.txt"


def _data(tmp_path: Path) -> Path:
    path = tmp_path / "data.txt"
    path.write_text(SHAKESPEARE.read_text(encoding="utf-8")[:30000], encoding="utf-8")
    return path


def test_bpe_without_vocab_size_names_the_field(tmp_path):
    cfg = load_config("shakespeare-char", ["tokenizer.name=bpe"])
    with pytest.raises(ConfigError, match=r"^tokenizer\.vocab_size: .*tokenizer\.vocab_size="):
        validate_components(cfg)
    # the same error, not a TypeError, when the tokenizer is built without validation
    with pytest.raises(ConfigError, match=r"tokenizer\.vocab_size"):
        build_tokenizer(cfg, [_data(tmp_path)])


def test_bpe_with_vocab_size_is_trained_on_the_data(tmp_path):
    data = _data(tmp_path)
    cfg = load_config("shakespeare-char", ["tokenizer.name=bpe", "tokenizer.vocab_size=300"])
    validate_components(cfg)
    tok = build_tokenizer(cfg, [data])
    # the reference: the plugin's own trainer called directly on the same document
    ref = BPETokenizer.train([data.read_text(encoding="utf-8")], 300)
    sample = SHAKESPEARE.read_text(encoding="utf-8")[40000:42000]
    assert tok.vocab_size == ref.vocab_size == 300
    assert tok.encode(sample) == ref.encode(sample)


def test_params_that_load_a_vocabulary_are_not_training():
    assert trains_on_data(BPETokenizer, {})
    assert trains_on_data(BPETokenizer, {"vocab_size": 300, "pattern": "gpt2"})
    assert not trains_on_data(BPETokenizer, {"encoding": "gpt2"})
    tok = build_tokenizer(load_config("gpt2"))
    ref = load_tokenizer(Path(__file__).parent / "fixtures" / "tokenizers" / "gpt2")
    assert tok.encode("it's 2026") == ref.encode("it's 2026")


def test_any_missing_required_train_param_is_named():
    class Learner:
        learns_from_data = True

        def __init__(self, table: str = "") -> None: ...

        @classmethod
        def train(cls, texts, size, *, alpha, beta=1.0): ...

    check_train_params("learner", Learner, {"size": 3, "alpha": 0.5})
    with pytest.raises(ConfigError) as err:
        check_train_params("learner", Learner, {"beta": 2.0})
    msg = str(err.value)
    assert msg.startswith("tokenizer.size, tokenizer.alpha: tokenizer 'learner'")
    assert "tokenizer.table" in msg and "tokenizer.beta" not in msg
