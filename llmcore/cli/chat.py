"""``llmcore chat RUN``: an interactive conversation over the run's chat template.

The template is the model's own Jinja chat template when it has one (an HF folder or a
GGUF file), else the config's ``tokenizer.chat_template`` (the one fine-tuning trained
with), else the default plain-text template. Each answer streams as it is generated and
ends at the model's end-of-turn and eos ids (a Jinja-templated model) or at the template's
end marker. Message text is always plain text: ``<|im_start|>`` typed in a message is
those characters, never the special token. The oldest turns are dropped when the
conversation no longer fits the context; a message the tokenizer cannot encode is reported
and left out, and the conversation goes on. ``/reset`` starts over, ``/quit`` (or end of
input) leaves.
"""

from __future__ import annotations

import argparse
import sys

from llmcore.cli.generate import add_sampling_args


def add_to(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("chat", help="chat with a fine-tuned run")
    p.add_argument("run", help="run or checkpoint folder, Hugging Face folder or .gguf file")
    p.add_argument("--system", default=None, help="a system message opening the conversation")
    add_sampling_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace, stdin=None, stdout=None) -> int:
    from llmcore.cli.generate import load
    from llmcore.errors import TokenizerError
    from llmcore.finetune.chat import chat_for, chat_template_of
    from llmcore.generation import stream

    stdin = stdin or sys.stdin
    out = stdout or sys.stdout
    loaded, cfg = load(args)
    model, tok = loaded.model, loaded.tokenizer
    chat = chat_for(loaded, cfg)
    if loaded.chat_template:  # the model's own template: its end-of-turn and eos ids
        stop = {"stop_ids": sorted({*loaded.stop_ids, *chat.end_ids[:1]})}
    else:
        template, end = chat_template_of(cfg), chat.end_ids
        # Answers end at the end marker: one special id, else its text as a stop string.
        special = template.special and len(end) == 1
        stop = {"stop_ids": end} if special else {"stop": [template.end]}
    block = model.config.block_size
    budget = cfg.generate.max_new_tokens
    opening = [{"role": "system", "content": args.system}] if args.system else []
    messages = list(opening)
    interactive = stdin.isatty()
    while True:
        if interactive:
            out.write("you> ")
            out.flush()
        line = stdin.readline()
        if not line or line.strip() == "/quit":
            break
        text = line.rstrip("\n")
        if text.strip() == "/reset":
            messages = list(opening)
            continue
        if not text.strip():
            continue
        messages.append({"role": "user", "content": text})
        try:
            ids = chat.prompt(messages)
        except TokenizerError as exc:  # say, a character outside a char vocabulary
            out.write(f"(the message cannot be encoded: {exc})\n")
            messages.pop()
            continue
        while len(ids) + 1 > block and len(messages) > len(opening) + 1:
            del messages[len(opening) : len(opening) + 2]  # the oldest exchange
            ids = chat.prompt(messages)
        n = min(budget, block - len(ids))
        if n <= 0:
            out.write("(the message is too long for the model's context)\n")
            messages.pop()
            continue
        out.write("model> " if interactive else "")
        answer = []
        for token in stream(model, tok, ids, config=cfg, max_new_tokens=n, **stop):
            answer.append(token.text)
            out.write(token.text)
            out.flush()
        out.write("\n")
        messages.append({"role": "assistant", "content": "".join(answer)})
    return 0
