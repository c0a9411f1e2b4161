"""Readiness probes off the reconcile worker, like a kubelet's prober.

``ReadinessProber.ready(key, endpoint)`` answers at once from what the last
probe saw and schedules the next probe on a small thread pool; when a probe
sees readiness change it calls ``on_change(key)`` so the controller
reconciles that agent again. A slow or hung agent never blocks a worker.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

Key = tuple[str, str]
PROBE_TIMEOUT = 1.0
#: A result younger than this is answered without probing again.
FRESH_SECONDS = 0.2


def http_ready(endpoint: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """``GET {endpoint}/readyz`` answers 200."""
    try:
        with urllib.request.urlopen(f"{endpoint}/readyz", timeout=timeout) as response:  # noqa: S310
            return response.status == 200
    except Exception:  # refused, reset, timed out, 503: not ready
        return False


@dataclass
class _Seen:
    endpoint: str
    ready: bool | None = None
    checked: float = 0.0
    probing: bool = False


class ReadinessProber:
    def __init__(self, on_change: Callable[[Key], None] = lambda key: None, *,
                 probe: Callable[[str], bool] = http_ready, workers: int = 4) -> None:
        self.on_change = on_change
        self.probe = probe
        self._seen: dict[Key, _Seen] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="probe")

    def ready(self, key: Key, endpoint: str) -> bool:
        """What the last probe of ``endpoint`` saw (False before the first); probes again
        in the background when that is older than :data:`FRESH_SECONDS`."""
        with self._lock:
            seen = self._seen.get(key)
            if seen is None or seen.endpoint != endpoint:
                seen = self._seen[key] = _Seen(endpoint)
            stale = time.monotonic() - seen.checked > FRESH_SECONDS
            if stale and not seen.probing:
                seen.probing = True
                self._pool.submit(self._run, key, seen)
            return bool(seen.ready)

    def forget(self, key: Key) -> None:
        with self._lock:
            self._seen.pop(key, None)

    def _run(self, key: Key, seen: _Seen) -> None:
        result = self.probe(seen.endpoint)
        with self._lock:
            changed = seen.ready is not result
            seen.ready, seen.checked, seen.probing = result, time.monotonic(), False
            current = self._seen.get(key) is seen
        if changed and current:
            self.on_change(key)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
