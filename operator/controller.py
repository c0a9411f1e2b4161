"""The local operator: drives the reconciler from store changes, Docker events,
credential changes, readiness changes and a periodic resync.

One instance per ``$DEN_HOME`` (an exclusive ``flock`` on ``operator.lock``).
A work queue de-duplicates keys and hands each to one of a pool of workers at a
time, so a fleet converges in parallel; each key has capped exponential
backoff with jitter on failure, visible in the agent's status.
"""

from __future__ import annotations

import fcntl
import heapq
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from den.api.errors import DenError
from den.operator import names
from den.operator.reconcile import Reconciler, TerminalError
from den.operator.store import Store

log = logging.getLogger("den.operator")

RESYNC_SECONDS = 10.0
CREDENTIALS_POLL = 1.0
BACKOFF_BASE = 0.5
BACKOFF_CAP = 60.0
TERMINAL_RETRY = 30.0
#: Agents reconciled at once (a key is never worked on by two workers).
WORKERS = 8

Key = tuple[str, str]


class WorkQueue:
    """Keys due at a time, handed to one worker at a time (client-go's workqueue contract).

    Adding a key already queued keeps the earlier time. A key being processed is
    not handed out again until :meth:`done`; adding it meanwhile queues it for
    after that, so one agent is never reconciled by two workers at once.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, Key]] = []
        self._due: dict[Key, float] = {}
        self._processing: set[Key] = set()
        self._again: dict[Key, float] = {}
        self._cond = threading.Condition()

    def add(self, key: Key, delay: float = 0.0) -> None:
        when = time.monotonic() + delay
        with self._cond:
            if key in self._processing:
                self._again[key] = min(when, self._again.get(key, when))
                return
            if key in self._due and self._due[key] <= when:
                return
            self._due[key] = when
            heapq.heappush(self._heap, (when, key))
            self._cond.notify()

    def get(self, stop: threading.Event) -> Key | None:
        with self._cond:
            while not stop.is_set():
                while self._heap and self._due.get(self._heap[0][1]) != self._heap[0][0]:
                    heapq.heappop(self._heap)  # superseded entry
                if self._heap:
                    when, key = self._heap[0]
                    wait = when - time.monotonic()
                    if wait <= 0:
                        heapq.heappop(self._heap)
                        del self._due[key]
                        self._processing.add(key)
                        return key
                    self._cond.wait(min(wait, 1.0))
                else:
                    self._cond.wait(1.0)
        return None

    def done(self, key: Key) -> None:
        """The worker finished ``key``; a re-add that came meanwhile is queued now."""
        with self._cond:
            self._processing.discard(key)
            when = self._again.pop(key, None)
        if when is not None:
            self.add(key, max(0.0, when - time.monotonic()))

    def __len__(self) -> int:
        with self._cond:
            return len(self._due)


class OperatorLock:
    """An exclusive lock file holding the operator's pid."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 (held for the process lifetime)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._handle = handle
        return True

    def holder(self) -> int | None:
        """The pid of the running operator, or None."""
        if not self.path.exists():
            return None
        with open(self.path, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                text = handle.read().strip()
                return int(text) if text.isdigit() else -1
            fcntl.flock(handle, fcntl.LOCK_UN)
            return None


def backoff_delay(retries: int, *, terminal: bool = False, jitter: Callable[[], float] | None = None) -> float:
    """Seconds before retry number ``retries``: exponential from :data:`BACKOFF_BASE` with
    +-20% jitter, never above :data:`BACKOFF_CAP`; terminal errors wait :data:`TERMINAL_RETRY`."""
    if terminal:
        return TERMINAL_RETRY
    factor = jitter() if jitter else random.uniform(0.8, 1.2)
    return min(BACKOFF_CAP, BACKOFF_BASE * 2 ** min(retries - 1, 32) * factor)


class Controller:
    """Drives a :class:`Reconciler` from events with a pool of workers keyed by agent."""

    def __init__(self, store: Store, reconciler: Reconciler, *, events_source: Callable | None = None,
                 workers: int = WORKERS, watch_version: Callable[[], object] | None = None,
                 system: Mapping[Key, Any] | None = None) -> None:
        self.store = store
        self.reconciler = reconciler
        #: System components (the model gateway) by work-queue key: reconciled on the same queue.
        self.system = dict(system or {})
        self.queue = WorkQueue()
        self.stop = threading.Event()
        self.failures: dict[Key, int] = {}
        self.events_source = events_source
        self.workers = max(1, workers)
        self.watch_version = watch_version
        #: Keys of the first listing not yet reconciled (None: all were, or not running yet).
        self._unsynced: set[Key] | None = None
        self._sync_lock = threading.Lock()

    def enqueue_all(self) -> None:
        for key in self.system:
            self.queue.add(key)
        for agent in self.store.list():
            self.queue.add((agent.namespace, agent.name))

    def _watch_store(self) -> None:
        since = self.store.resource_version()
        while not self.stop.is_set():
            try:
                for change in self.store.watch(since, timeout=1.0):
                    since = change.resource_version
                    self.queue.add((change.agent.namespace, change.agent.name))
            except Exception as exc:  # Expired or a transient SQLite error: relist
                log.warning("store watch restarted: %s", exc)
                since = self.store.resource_version()
                self.enqueue_all()
                time.sleep(0.5)

    def _watch_docker(self) -> None:
        while not self.stop.is_set() and self.events_source is not None:
            try:
                for event in self.events_source():
                    if self.stop.is_set():
                        return
                    labels = (event.get("Actor") or {}).get("Attributes") or {}
                    name = labels.get(names.LABEL_AGENT)
                    if name:
                        self.queue.add((labels.get(names.LABEL_NAMESPACE, "default"), name))
                    elif labels.get(names.LABEL_COMPONENT):
                        for key in self.system:
                            if key[1] == f"den-{labels[names.LABEL_COMPONENT]}":
                                self.queue.add(key)
            except Exception as exc:
                log.warning("docker event stream ended: %s; reconnecting", exc)
                time.sleep(1.0)

    def _watch_credentials(self) -> None:
        """``den auth`` and ``den up`` change files, not the store: re-reconcile on any change."""
        assert self.watch_version is not None
        seen = self.watch_version()
        while not self.stop.wait(CREDENTIALS_POLL):
            try:
                current = self.watch_version()
            except OSError as exc:
                log.warning("cannot read credentials: %s", exc)
                continue
            if current != seen:
                seen = current
                self.enqueue_all()

    def _resync(self) -> None:
        while not self.stop.wait(RESYNC_SECONDS):
            self._heartbeat()
            self.enqueue_all()

    def _heartbeat(self) -> None:
        try:
            self.store.heartbeat()
        except Exception as exc:  # a busy store: the next resync writes it
            log.warning("heartbeat not written: %s", exc)

    def _processed(self, key: Key) -> None:
        """Once every key of the first listing had a pass, say so (``den up`` waits for it when it
        had to start the operator: until then a status is what the last operator saw)."""
        with self._sync_lock:
            if self._unsynced is None:
                return
            self._unsynced.discard(key)
            if self._unsynced:
                return
            self._unsynced = None
        try:
            self.store.mark_synced()
        except Exception as exc:  # a busy store: den up then waits for its timeout
            log.warning("could not record the first pass: %s", exc)

    def process(self, key: Key) -> None:
        """Reconcile ``key`` once; on failure record it and requeue with backoff."""
        try:
            self._process(key)
        finally:
            self._processed(key)

    def _process(self, key: Key) -> None:
        namespace, name = key
        component = self.system.get(key)
        try:
            result = component.reconcile() if component else self.reconciler.reconcile(namespace, name)
        except Exception as exc:
            retries = self.failures.get(key, 0) + 1
            self.failures[key] = retries
            delay = backoff_delay(retries, terminal=isinstance(exc, TerminalError))
            log.warning("reconcile %s/%s failed (retry %d in %.1fs): %s", namespace, name, retries, delay, exc)
            if not isinstance(exc, DenError):
                log.debug("traceback", exc_info=True)
            try:
                if component:
                    component.record_failure(exc)
                else:
                    self.reconciler.record_failure(namespace, name, exc, retries, delay)
            except Exception as status_error:  # never let status reporting kill the worker
                log.warning("could not record failure for %s/%s: %s", namespace, name, status_error)
            self.queue.add(key, delay)
            return
        self.failures.pop(key, None)
        if result.requeue_after is not None:
            self.queue.add(key, result.requeue_after)
        if not component:  # an agent changed: the gateway's config follows
            for system_key in self.system:
                self.queue.add(system_key)

    def _work(self) -> None:
        while not self.stop.is_set():
            key = self.queue.get(self.stop)
            if key is None:
                continue
            try:
                self.process(key)
            finally:
                self.queue.done(key)

    def run(self) -> None:
        watchers = [self._watch_store, self._resync]
        if self.events_source is not None:
            watchers.append(self._watch_docker)
        if self.watch_version is not None:
            watchers.append(self._watch_credentials)
        threads = [threading.Thread(target=w, name=w.__name__.strip("_"), daemon=True) for w in watchers]
        threads += [threading.Thread(target=self._work, name=f"worker-{i}", daemon=True)
                    for i in range(self.workers)]
        for thread in threads:
            thread.start()
        self._heartbeat()
        with self._sync_lock:
            self._unsynced = set(self.system) | {(a.namespace, a.name) for a in self.store.list()}
        self.enqueue_all()
        log.info("operator running (pid %d, %d workers)", os.getpid(), self.workers)
        self.stop.wait()
        for thread in threads:
            thread.join(timeout=5)
        self._heartbeat()
        log.info("operator stopped")


def setup_logging(path: Path | None) -> None:
    handler: logging.Handler = logging.FileHandler(path) if path else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger("den")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def run_operator(*, log_file: Path | None = None) -> int:
    """``den operator run``: hold the lock, reconcile until SIGTERM/SIGINT."""
    from den.operator import egress, gateway
    from den.operator.cron import fetch_cron
    from den.operator.docker_backend import DockerBackend
    from den.operator.readiness import ReadinessProber
    from den.operator.secrets import LocalCredentials

    setup_logging(log_file)
    lock = OperatorLock(names.operator_lock_path())
    if not lock.acquire():
        raise DenError(f"an operator is already running (pid {lock.holder()})", hint="den operator status")
    store = Store(names.state_db_path())
    installation = store.installation
    log.info("installation %s (%s)", installation.id, names.den_home())
    backend = DockerBackend(installation=installation, image_pins=store.image_pins)
    backend.check()  # fail fast when Docker is unreachable
    credentials = LocalCredentials()
    prober = ReadinessProber()
    reconciler = Reconciler(store, backend, credentials=credentials, readiness=prober, cron_report=fetch_cron)

    def docker_events():
        """This installation's container events (another installation's are not ours to heal)."""
        events = backend.client.events(decode=True, filters={"type": "container",
                                                             "label": installation.label_filter})
        return (e for e in events if installation.owns((e.get("Actor") or {}).get("Attributes")))

    controller = Controller(store, reconciler, events_source=docker_events, watch_version=credentials.version,
                            system={gateway.KEY: gateway.GatewayReconciler(store, backend, credentials),
                                    egress.KEY: egress.EgressReconciler(store, backend)})
    prober.on_change = controller.queue.add

    def stop(_signum: int, _frame: object) -> None:
        controller.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    controller.run()
    return 0


def operator_pid() -> int | None:
    return OperatorLock(names.operator_lock_path()).holder()


def ensure_operator(timeout: float = 10.0) -> int:
    """Start the operator in the background unless one is running; return its pid."""
    pid = operator_pid()
    if pid:
        return pid
    home = names.den_home()
    home.mkdir(parents=True, exist_ok=True)
    log_path = names.operator_log_path()
    with open(log_path, "a") as log_file:
        subprocess.Popen(
            [sys.executable, "-m", "den", "operator", "run", "--log-file", str(log_path)],
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
            start_new_session=True, close_fds=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = operator_pid()
        if pid:
            return pid
        time.sleep(0.05)
    raise DenError(f"the operator did not start; see {log_path}")


def stop_operator(timeout: float = 10.0) -> int | None:
    pid = operator_pid()
    if not pid or pid < 0:
        return None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and operator_pid():
        time.sleep(0.05)
    if operator_pid():
        os.kill(pid, signal.SIGKILL)
    return pid
