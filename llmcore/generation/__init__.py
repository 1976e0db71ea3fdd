"""Text generation: prompt -> ids -> model with KV cache -> sampler chain -> decoder -> text.

The package, one concept per module:

- :mod:`~llmcore.generation.settings`: the settings of a call and the prompts, checked;
- :mod:`~llmcore.generation.steps`: the batched step loop (prefill, then one token per step);
- :mod:`~llmcore.generation.lean`: the lean single-token decode step the loop uses;
- :mod:`~llmcore.generation.text`: one row's ids turned into released text;
- :mod:`~llmcore.generation.streaming`: a batch streamed row by row;
- :mod:`~llmcore.generation.api`: :func:`generate` and :func:`stream`.

Settings (keyword arguments of :func:`generate` and :func:`stream`):

- ``max_new_tokens``: at most this many new tokens per prompt (default 200).
- ``samplers``: logits processors ``(input_ids, logits) -> logits`` applied in order;
  ``decoder``: the final choice per step (default: the ``greedy`` decoder), or a search
  decoder (``beam``) that runs the whole search itself (:class:`~llmcore.contracts.Decoder`
  states both forms).
- ``config``: a :class:`~llmcore.config.Config` (or its ``generate`` section) whose
  samplers, decoder, ``max_new_tokens``, ``seed`` and ``stop`` fill any setting not given.
- ``seed``: seeds the sampling generator (same seed, same prompts -> same output).
- ``stop_ids``: token ids that end a row (not included); the tokenizer's end-of-text id is
  one unless ``eot=False``. ``stop``: strings that end a row; the text ends before the stop
  string, and the ids are the tokens whose text begins before it.
- ``end_ids``: a sequence of token ids (say a chat template's end marker, which may take
  several tokens) that ends a row when the row's ids end with it; unlike ``stop_ids`` it is
  kept, at the end of the ids and the text.
- ``logprobs``: also return each chosen token's log-probability under the model (the raw
  distribution, before the samplers).
- ``sliding_context``: past ``block_size``, condition on the last ``block_size`` tokens
  instead of stopping with an error.

A prompt longer than the context is an error; so is ``prompt + max_new_tokens`` beyond
``model.block_size`` unless the model has a sliding window and a position plugin without a
table (``none``; the KV cache then holds the whole sequence). An empty prompt starts from
the tokenizer's beginning-of-text token (``bos_id``, else ``eot_id``).
"""

from llmcore.generation.api import Generation, generate, stream
from llmcore.generation.text import Token

__all__ = ["Generation", "Token", "generate", "stream"]
