"""What ``/metrics`` reports, in Prometheus' text format: queue depth, running batch, KV
slots in use, tokens generated and their rate, prompt tokens reused from the prefix
cache, and time to first token."""

from __future__ import annotations

import threading
import time
from collections import deque

#: seconds of history behind the tokens/s gauge
RATE_WINDOW = 10.0


class Metrics:
    """Counters updated by the engine (steps) and the routes (requests)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.queue_depth = 0
        self.running = 0
        self.peak_running = 0  # the largest running batch seen
        self.tokens_total = 0
        self.slots_in_use = 0
        self.prefix_reused = 0  # prompt tokens whose keys came from the prefix cache
        self.requests_total = 0
        self.ttft_sum = 0.0
        self.ttft_count = 0
        self.ttft_recent: deque[float] = deque(maxlen=1000)
        self._rate: deque[tuple[float, int]] = deque()

    def observe_step(
        self, waiting: int, running: int, tokens: int, slots: int = 0, reused: int = 0
    ) -> None:
        now = time.monotonic()
        with self.lock:
            self.queue_depth, self.running = waiting, running
            self.slots_in_use, self.prefix_reused = slots, reused
            self.peak_running = max(self.peak_running, running)
            self.tokens_total += tokens
            self._rate.append((now, tokens))
            while self._rate and self._rate[0][0] < now - RATE_WINDOW:
                self._rate.popleft()

    def observe_request(self, ttft: float | None) -> None:
        with self.lock:
            self.requests_total += 1
            if ttft is not None:
                self.ttft_sum += ttft
                self.ttft_count += 1
                self.ttft_recent.append(ttft)

    def tokens_per_second(self) -> float:
        with self.lock:
            if not self._rate:
                return 0.0
            span = max(time.monotonic() - self._rate[0][0], 1e-3)
            return sum(n for _, n in self._rate) / span

    def render(self) -> str:
        """The Prometheus exposition text."""
        rate = self.tokens_per_second()
        with self.lock:
            recent = sorted(self.ttft_recent)
            lines = [
                "# TYPE llmcore_queue_depth gauge",
                f"llmcore_queue_depth {self.queue_depth}",
                "# TYPE llmcore_running_batch gauge",
                f"llmcore_running_batch {self.running}",
                "# TYPE llmcore_running_batch_peak gauge",
                f"llmcore_running_batch_peak {self.peak_running}",
                "# TYPE llmcore_kv_slots_in_use gauge",
                f"llmcore_kv_slots_in_use {self.slots_in_use}",
                "# TYPE llmcore_prefix_cache_reused_tokens_total counter",
                f"llmcore_prefix_cache_reused_tokens_total {self.prefix_reused}",
                "# TYPE llmcore_generated_tokens_total counter",
                f"llmcore_generated_tokens_total {self.tokens_total}",
                "# TYPE llmcore_tokens_per_second gauge",
                f"llmcore_tokens_per_second {rate:.3f}",
                "# TYPE llmcore_requests_total counter",
                f"llmcore_requests_total {self.requests_total}",
                "# TYPE llmcore_time_to_first_token_seconds summary",
            ]
            for q in (0.5, 0.9, 0.99):
                v = recent[min(int(q * len(recent)), len(recent) - 1)] if recent else 0.0
                lines.append(f'llmcore_time_to_first_token_seconds{{quantile="{q}"}} {v:.6f}')
            lines += [
                f"llmcore_time_to_first_token_seconds_sum {self.ttft_sum:.6f}",
                f"llmcore_time_to_first_token_seconds_count {self.ttft_count}",
            ]
        return "\n".join(lines) + "\n"
