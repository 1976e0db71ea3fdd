"""Looking inside a model: a traced forward pass (:func:`trace`), the sampler view
(:func:`sampler_view`) and the self-contained HTML page that shows both (:func:`write_page`).
"""

from llmcore.inspect.lens import LogitLens, logit_lens
from llmcore.inspect.page import page_html, write_page
from llmcore.inspect.sampler_view import SamplerStage, SamplerView, sampler_chain, sampler_view
from llmcore.inspect.tracing import Trace, TracedToken, trace

__all__ = [
    "LogitLens",
    "SamplerStage",
    "SamplerView",
    "Trace",
    "TracedToken",
    "logit_lens",
    "page_html",
    "sampler_chain",
    "sampler_view",
    "trace",
    "write_page",
]
