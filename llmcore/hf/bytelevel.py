"""A byte-level BPE ``tokenizer.json`` from an llmcore ``bpe`` tokenizer's byte ranks.

tiktoken-style BPE merges any adjacent pair whose concatenation is a token, lowest rank first;
HF's BPE applies listed merges, lowest merge index first. Listing, for every token in rank
order, each split of it into two tokens makes the two agree (the way transformers converts
tiktoken files): the lowest-indexed applicable merge is then always the lowest-ranked
concatenation.
"""

from __future__ import annotations

from typing import Any

# The regexes HF's (non-possessive) regex engine reads like tiktoken's patterns; gpt2's is
# built into the ByteLevel pre-tokenizer.
HF_SPLIT_REGEX = {
    "cl100k_base": r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""",
}


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table used by byte-level vocabularies."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    keep += range(ord("®"), ord("ÿ") + 1)
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _ranks(tokenizer: Any) -> tuple[list[bytes], list[int], list[int]] | None:
    """(token bytes, rank, id) of every ordinary token, or None when they are not exposed."""
    data = getattr(tokenizer, "_ranks_data", None)
    if data is not None:
        tokens, ranks = data
        ids = getattr(tokenizer, "_id_list", None) or list(ranks)
        return list(tokens), list(ranks), list(ids)
    if not hasattr(tokenizer, "token_bytes"):
        return None
    specials = set(tokenizer.special_tokens.values())
    ids = [i for i in range(tokenizer.vocab_size) if i not in specials]
    return [tokenizer.token_bytes(i) for i in ids], ids, ids  # rank == id (tiktoken)


def _pre_tokenizer(pattern: str) -> dict[str, Any] | None:
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True}
    if pattern == "gpt2":
        return {**byte_level, "use_regex": True}
    if pattern in HF_SPLIT_REGEX:
        regex = HF_SPLIT_REGEX[pattern]
    else:
        from llmcore.builtin.bpe.encodings import PAT_STR

        regex = PAT_STR.get(pattern, "")
        if not regex or "++" in regex or "?+" in regex:  # possessive: HF would split otherwise
            return None
    split = {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False}
    return {"type": "Sequence", "pretokenizers": [split, {**byte_level, "use_regex": False}]}


def bpe_tokenizer_json(tokenizer: Any) -> dict[str, Any] | None:
    """The HF tokenizer.json of a byte-level BPE tokenizer, or None if it cannot be expressed
    (no ranks exposed, or a pre-tokenizer HF's regex engine cannot reproduce)."""
    found = _ranks(tokenizer)
    pre = _pre_tokenizer(getattr(tokenizer, "pattern", ""))
    if found is None or pre is None:
        return None
    tokens, ranks, ids = found
    table = bytes_to_unicode()

    def text(b: bytes) -> str:
        return "".join(table[x] for x in b)

    rank_of = dict(zip(tokens, ranks))
    merges: list[tuple[int, int, int, str, str]] = []
    for tok, rank in rank_of.items():
        for cut in range(1, len(tok)):
            left, right = tok[:cut], tok[cut:]
            if left in rank_of and right in rank_of:
                merges.append((rank, rank_of[left], rank_of[right], text(left), text(right)))
    merges.sort()
    added = [
        {
            "id": i,
            "content": s,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for s, i in sorted(tokenizer.special_tokens.items(), key=lambda kv: kv[1])
    ]
    return tokenizer_json(
        {**{text(t): i for t, i in zip(tokens, ids)}, **tokenizer.special_tokens},
        [[m[3], m[4]] for m in merges],
        added_tokens=added,
        pre_tokenizer=pre,
        post_processor={"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False},
        decoder={"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True},
    )


def tokenizer_json(
    vocab: dict[str, int],
    merges: list[list[str]],
    *,
    added_tokens: list[dict[str, Any]] = (),
    pre_tokenizer: dict[str, Any] | None = None,
    post_processor: dict[str, Any] | None = None,
    decoder: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A Hugging Face ``tokenizer.json`` of a BPE model with the given parts."""
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": list(added_tokens),
        "normalizer": None,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post_processor,
        "decoder": decoder,
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": merges,
        },
    }
