"""``llmcore serve``: an OpenAI-compatible HTTP server over a continuously batched engine.

- :mod:`.schemas` parses and checks request bodies into :class:`~.schemas.GenRequest`;
- :mod:`.kv_slots` keeps the KV memory: one fixed slot (row) per running sequence;
- :mod:`.scheduler` decides, per step, which sequences prefill, decode or leave;
- :mod:`.engine` runs the step loop in a background thread;
- :mod:`.metrics` counts what ``/metrics`` reports;
- :mod:`.app` holds the Starlette routes (needs the ``llmcore[serve]`` extra).
"""

from llmcore.serve.engine import Engine, Served

__all__ = ["Engine", "Served"]
