"""From a parsed request to engine sequences: the model loaded once, the prompt ids (chat
messages through the model's chat template), the sampler chain, and the context check."""

from __future__ import annotations

from pathlib import Path

from llmcore.errors import LLMCoreError
from llmcore.generation.steps import new_generator
from llmcore.generation.text import RowText
from llmcore.serve.engine import Served
from llmcore.serve.sampling import RowSampling
from llmcore.serve.schemas import DEFAULT_COMPLETION_TOKENS, ApiError, GenRequest, Sampling
from llmcore.serve.sequence import Sequence


def load_served(path: str, *, device: str = "cpu") -> Served:
    """The model at ``path``: anything ``llmcore.load`` (where present) or
    :func:`~llmcore.checkpoint.load_checkpoint` reads."""
    import llmcore
    from llmcore.finetune.chat import chat_for

    loader = getattr(llmcore, "load", None) or llmcore.load_checkpoint
    loaded = loader(path, device=device)
    return Served(
        name=Path(path).name or str(path),
        model=loaded.model,
        tokenizer=loaded.tokenizer,
        config=loaded.config,
        chat_template=loaded.chat_template,
        stop_ids=tuple(loaded.stop_ids),
        chat=chat_for(loaded),
    )


def render_chat(served: Served, messages: list[dict]) -> tuple[list[int], set[int], list[str]]:
    """Prompt ids of ``messages`` ending where the assistant's answer starts, with the ids
    and strings that end the answer. User text is encoded as text: it never becomes a
    special token. The chat format is the model's own Jinja template where it has one,
    else llmcore's marker template from the config."""
    from llmcore.finetune.chat import Chat, chat_template_of

    chat = served.chat
    if chat is None:
        from llmcore.config import ChatTemplate

        template = ChatTemplate() if served.config is None else chat_template_of(served.config)
        chat = Chat(template, served.tokenizer)
    try:
        ids = chat.prompt(messages, "messages")
    except LLMCoreError as exc:
        raise ApiError(400, str(exc), "messages") from None
    end = chat.end_ids
    if not isinstance(chat, Chat):  # a model's own template: its end-of-turn and stop ids
        return ids, {end[0], *served.stop_ids} if end else set(served.stop_ids), []
    if chat.template.special and len(end) == 1:  # one special id ends an answer
        return ids, set(end), []
    return ids, set(), [chat.template.end]


def row_sampling(s: Sampling, model, seed: int | None) -> RowSampling:
    """The settings of one choice; a seeded choice gets a generator of its own."""
    vocab = model.config.vocab_size
    return RowSampling(
        temperature=s.temperature,
        top_k=0 if s.top_k is None or s.top_k >= vocab else s.top_k,
        top_p=s.top_p,
        min_p=s.min_p or 0.0,
        typical_p=1.0 if s.typical_p is None else s.typical_p,
        repetition_penalty=1.0 if s.repetition_penalty is None else s.repetition_penalty,
        frequency_penalty=s.frequency_penalty,
        presence_penalty=s.presence_penalty,
        generator=None if seed is None else new_generator(model, seed),
    )


def prompt_ids(served: Served, req: GenRequest, prompt) -> tuple[list[int], set[int], list[str]]:
    """The ids of one prompt and the extra stop ids and strings its answer ends at."""
    if req.chat:
        return render_chat(served, prompt)
    tok = served.tokenizer
    ids = list(prompt) if isinstance(prompt, list) else tok.encode(prompt)
    vocab = served.model.config.vocab_size
    if any(not 0 <= i < vocab for i in ids):
        raise ApiError(400, f"prompt token ids must be in [0, {vocab})", "prompt")
    if not ids:
        start = getattr(tok, "bos_id", None)
        start = tok.eot_id if start is None else start
        if start is None:
            raise ApiError(400, "the prompt is empty", "prompt")
        ids = [int(start)]
    return ids, set(), []


def build_sequences(served: Served, req: GenRequest, emit, context: int) -> list[Sequence]:
    """``n`` sequences per prompt of ``req`` (index ``prompt * n + i``), checked against
    the ``context`` length; ``emit`` receives their deltas."""
    tok = served.tokenizer
    base = set(served.stop_ids)
    if getattr(tok, "eot_id", None) is not None:
        base.add(int(tok.eot_id))
    seqs = []
    for p, prompt in enumerate(req.prompts):
        ids, stop_ids, stops = prompt_ids(served, req, prompt)
        room = context - len(ids)
        default = room if req.chat else min(DEFAULT_COMPLETION_TOKENS, room)
        max_new = default if req.max_tokens is None else req.max_tokens
        if len(ids) + max_new > context or room < 0:
            raise ApiError(
                400,
                f"this model's context is {context} tokens; the prompt has {len(ids)} tokens "
                f"and max_tokens asks for {max_new} more ({len(ids) + max_new} in all)",
                "max_tokens",
            )
        for i in range(req.n):
            seed = req.sampling.seed
            sampling = row_sampling(req.sampling, served.model, None if seed is None else seed + i)
            text = RowText(tok, base | stop_ids, req.stop + stops, req.logprobs)
            seqs.append(
                Sequence(
                    p * req.n + i,
                    ids,
                    max_new,
                    sampling,
                    text,
                    emit,
                    top_logprobs=req.top_logprobs,
                    prompt_logprobs=req.echo and req.logprobs,
                )
            )
    return seqs
