"""The reconciler and the controller against an in-memory backend: no Docker, a real store.

The fake keeps containers, volumes and images in dicts and implements the
same :class:`~den.operator.backend.Backend` protocol as the Docker backend,
so these tests pin the reconcile contract itself: credentials, ports,
foreign containers, finalizers, backoff and terminal errors.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest

from den.api.agentfile import AgentSpec
from den.api.contract import TOKEN_ENV
from den.api.resource import Agent, ObjectMeta
from den.operator import names
from den.operator.backend import Backend, PortTaken
from den.operator.controller import (
    BACKOFF_CAP,
    TERMINAL_RETRY,
    Controller,
    WorkQueue,
    backoff_delay,
)
from den.operator.network import Layout
from den.operator.plan import (
    Action,
    AgentSecrets,
    DesiredNetContainer,
    Observed,
    ObservedContainer,
    Operation,
)
from den.operator.readiness import ReadinessProber
from den.operator.reconcile import Reconciler, TerminalError
from den.operator.secrets import MissingVariable, resolve_env
from den.operator.store import Store

IMAGE = "den-runtime:latest"
LAYOUT = Layout("172.29.0.0/16")


class FakeBackend:
    """Containers, volumes and images in memory; ``taken`` ports belong to other programs."""

    kind = "fake"

    def __init__(self) -> None:
        self.containers: dict[str, dict] = {}
        self.volumes: set[str] = set()
        self.images = {IMAGE: "sha256:one"}
        self.foreign: set[str] = set()
        self.taken: set[int] = set()
        self.calls: list[str] = []
        self.delivered: dict[str, dict[str, str]] = {}
        self.delay = 0.0
        self.active = 0
        self.most_active = 0
        self._lock = threading.Lock()

    def observe(self, agent: Agent) -> Observed:
        with self._lock:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        time.sleep(self.delay)
        with self._lock:
            self.active -= 1
        mine, nets, used, addresses = [], [], set(), set()
        for c in self.containers.values():
            is_net = c["labels"].get(names.LABEL_COMPONENT) == names.COMPONENT_NET
            if c["labels"][names.LABEL_AGENT] == agent.name:
                (nets if is_net else mine).append(
                    ObservedContainer(id=c["id"], name=c["name"], running=c["running"],
                                      status="running" if c["running"] else "exited",
                                      labels=c["labels"], host_port=c["port"]))
            else:
                if c["port"]:
                    used.add(c["port"])
                if is_net:
                    addresses.add(c["labels"][names.LABEL_ADDRESS])
        name = names.container_name(agent.name, agent.namespace)
        return Observed(containers=tuple(mine), volume_exists=names.volume_name(agent.name) in self.volumes,
                        image_id=self.images.get(agent.spec.runtime.base),
                        foreign_container=name in self.foreign and not mine, used_ports=frozenset(used),
                        layout=LAYOUT, net_containers=tuple(nets), used_addresses=frozenset(addresses),
                        net_image_id="sha256:egress")

    def execute(self, operation: Operation) -> None:
        self.calls.append(str(operation))
        desired = operation.container
        if operation.action == Action.create_volume:
            self.volumes.add(operation.name)
        elif operation.action == Action.create_container:
            is_net = isinstance(desired, DesiredNetContainer)  # it holds the published port
            self.containers[operation.name] = {"id": uuid.uuid4().hex * 2, "name": operation.name,
                                               "running": False, "labels": dict(desired.labels),
                                               "port": desired.port if is_net else None}
            if not is_net:
                self.delivered[operation.name] = dict(desired.secrets.values)
        elif operation.action == Action.start_container:
            container = self.containers[operation.name]
            others = {c["port"] for c in self.containers.values() if c["running"] and c is not container}
            if container["port"] and container["port"] in self.taken | others:
                del self.containers[operation.name]
                raise PortTaken(container["port"])
            container["running"] = True
        elif operation.action == Action.remove_container:
            self.containers = {k: v for k, v in self.containers.items() if v["id"] != operation.id}
        elif operation.action == Action.remove_volume:
            self.volumes.discard(operation.name)

    def check(self) -> None:
        pass

    def has_image(self, image: str) -> bool:
        return image in self.images

    def facts(self, agent):
        return None

    def stats(self, agent):
        return None

    def logs(self, agent, *, follow, tail):
        return iter(())

    def exec(self, agent, command):
        raise NotImplementedError

    def exec_argv(self, agent, command, *, interactive, tty):
        return []


class FakeCredentials:
    def __init__(self) -> None:
        self.environ: dict[str, str] = {}
        self.tokens: dict[str, str] = {}
        self.forgotten: list[str] = []

    def secrets_for(self, agent: Agent) -> AgentSecrets:
        token = self.tokens.setdefault(agent.name, f"den_{agent.name}-token")
        return AgentSecrets({**resolve_env(agent, self.environ), TOKEN_ENV: token})

    def forget(self, agent: Agent) -> None:
        self.forgotten.append(agent.name)
        self.tokens.pop(agent.name, None)


class AlwaysReady:
    def __init__(self, ready: bool = True) -> None:
        self.value = ready

    def ready(self, key, endpoint: str) -> bool:
        return self.value

    def forget(self, key) -> None:
        pass  # answers are not cached here


@pytest.fixture
def world(tmp_path: Path):
    store = Store(tmp_path / "state.db")
    backend, credentials = FakeBackend(), FakeCredentials()
    reconciler = Reconciler(store, backend, credentials=credentials, readiness=AlwaysReady())
    yield store, backend, credentials, reconciler
    store.close()


def make_agent(name: str = "scout", **spec) -> Agent:
    body = {"model": {"provider": "openai", "name": "m"}, **spec}
    return Agent(metadata=ObjectMeta(name=name), spec=AgentSpec.model_validate(body))


def condition(store: Store, name: str, type_: str):
    return store.get(name).status.condition(type_)


def test_the_fake_backend_speaks_the_backend_protocol() -> None:
    assert isinstance(FakeBackend(), Backend)


def test_an_applied_agent_gets_a_token_delivered_by_the_reconciler(world) -> None:
    store, backend, credentials, reconciler = world
    store.apply(make_agent())
    reconciler.reconcile("default", "scout")
    assert backend.delivered["den-scout"][TOKEN_ENV] == "den_scout-token"
    status = store.get("scout").status
    assert status.phase == "Running" and status.port == 8800 and status.endpoint == "http://127.0.0.1:8800"
    assert names.FINALIZER in store.get("scout").metadata.finalizers


def test_reconciling_twice_changes_nothing(world) -> None:
    store, backend, _, reconciler = world
    store.apply(make_agent())
    reconciler.reconcile("default", "scout")
    before, version = list(backend.calls), store.get("scout").metadata.resourceVersion
    reconciler.reconcile("default", "scout")
    assert backend.calls == before
    assert store.get("scout").metadata.resourceVersion == version


def test_a_rotated_key_or_token_replaces_the_container_with_the_new_values(world) -> None:
    store, backend, credentials, reconciler = world
    store.apply(make_agent(runtime={"env": {"SEARCH_KEY": "${SEARCH_KEY}"}}))
    credentials.environ["SEARCH_KEY"] = "old-key"
    reconciler.reconcile("default", "scout")
    first = backend.containers["den-scout"]["id"]
    credentials.environ["SEARCH_KEY"] = "new-key"
    reconciler.reconcile("default", "scout")
    assert backend.containers["den-scout"]["id"] != first
    assert backend.delivered["den-scout"]["SEARCH_KEY"] == "new-key"
    assert "RemoveContainer container:den-scout#" in "\n".join(backend.calls)
    second = backend.containers["den-scout"]["id"]
    credentials.tokens["scout"] = "den_rotated"
    reconciler.reconcile("default", "scout")
    assert backend.containers["den-scout"]["id"] != second
    assert backend.delivered["den-scout"][TOKEN_ENV] == "den_rotated"


def test_the_secrets_digest_in_the_label_reveals_nothing_without_the_token() -> None:
    a = AgentSecrets({"KEY": "abc", TOKEN_ENV: "den_one"})
    b = AgentSecrets({"KEY": "abc", TOKEN_ENV: "den_two"})
    assert a.digest() != b.digest() and "abc" not in repr(a) and "den_one" not in repr(a)


def test_an_unresolved_variable_leaves_the_agent_pending_naming_it_and_creates_nothing(world) -> None:
    store, backend, credentials, reconciler = world
    store.apply(make_agent(runtime={"env": {"SEARCH_KEY": "${BRAVE_KEY}"}}))
    result = reconciler.reconcile("default", "scout")
    assert result.requeue_after is None and backend.calls == []
    status = store.get("scout").status
    assert status.phase == "Pending"
    ready, stalled = condition(store, "scout", "Ready"), condition(store, "scout", "Stalled")
    assert ready.status == "False" and ready.reason == "MissingVariable" and "${BRAVE_KEY}" in ready.message
    assert stalled.status == "True"
    assert "MissingVariable" in [e.reason for e in store.events("scout")]
    credentials.environ["BRAVE_KEY"] = "k"
    reconciler.reconcile("default", "scout")
    assert store.get("scout").status.phase == "Running"
    assert condition(store, "scout", "Stalled").status == "False"


def test_ports_come_from_the_snapshot_and_stay_with_the_agent(world) -> None:
    store, backend, _, reconciler = world
    for name in ("one", "two"):
        store.apply(make_agent(name))
        reconciler.reconcile("default", name)
    assert store.get("one").status.port == 8800 and store.get("two").status.port == 8801
    stop = make_agent("one", desiredState="stopped")
    store.apply(stop)
    reconciler.reconcile("default", "one")
    assert "den-one" not in backend.containers and store.get("one").status.port == 8800
    store.apply(make_agent("one"))
    reconciler.reconcile("default", "one")
    assert backend.containers["den-one-net"]["port"] == 8800


def test_a_port_taken_between_plan_and_start_moves_the_agent_to_the_next_one(world) -> None:
    store, backend, _, reconciler = world
    backend.taken = {8800, 8801}
    store.apply(make_agent())
    reconciler.reconcile("default", "scout")
    assert backend.containers["den-scout-net"]["port"] == 8802
    assert store.get("scout").status.endpoint == "http://127.0.0.1:8802"
    taken_events = [e for e in store.events("scout") if e.reason == "PortTaken"]
    assert len(taken_events) == 2 and "8800" in taken_events[0].message


def test_a_foreign_container_is_a_terminal_error_and_is_never_touched(world) -> None:
    store, backend, _, reconciler = world
    backend.foreign.add("den-scout")
    store.apply(make_agent())
    with pytest.raises(TerminalError) as raised:
        reconciler.reconcile("default", "scout")
    assert raised.value.reason == "NameConflict" and "Den does not own it" in str(raised.value)
    assert backend.calls == []


def test_a_missing_image_is_a_terminal_error(world) -> None:
    store, backend, _, reconciler = world
    store.apply(make_agent(runtime={"base": "den-nothing:1"}))
    with pytest.raises(TerminalError) as raised:
        reconciler.reconcile("default", "scout")
    assert raised.value.reason == "ImageMissing" and "make image" in str(raised.value)


def test_delete_removes_the_container_keeps_the_volume_then_drops_the_finalizer(world) -> None:
    store, backend, credentials, reconciler = world
    store.apply(make_agent())
    reconciler.reconcile("default", "scout")
    store.delete("scout")
    assert store.find("scout").metadata.deletionTimestamp
    assert reconciler.reconcile("default", "scout").requeue_after == 0.0
    reconciler.reconcile("default", "scout")
    assert store.find("scout") is None
    assert backend.containers == {} and backend.volumes == {"den-scout-home"}
    assert credentials.forgotten == []


def test_destroy_removes_the_volume_and_forgets_the_credentials(world) -> None:
    store, backend, credentials, reconciler = world
    store.apply(make_agent())
    reconciler.reconcile("default", "scout")
    store.add_finalizer("scout", "default", names.FINALIZER_DESTROY)
    store.delete("scout")
    for _ in range(3):
        reconciler.reconcile("default", "scout")
    assert store.find("scout") is None and backend.volumes == set()
    assert credentials.forgotten == ["scout"]


def test_backoff_doubles_with_jitter_and_never_passes_its_cap() -> None:
    assert backoff_delay(1, jitter=lambda: 1.0) == 0.5
    assert backoff_delay(4, jitter=lambda: 1.0) == 4.0
    assert backoff_delay(30, jitter=lambda: 1.2) == BACKOFF_CAP
    assert backoff_delay(10_000, jitter=lambda: 1.2) == BACKOFF_CAP
    assert backoff_delay(1, terminal=True) == TERMINAL_RETRY
    assert all(0.4 <= backoff_delay(1) <= 0.6 for _ in range(100))


def test_failures_are_recorded_with_their_backoff_and_cleared_by_success(world) -> None:
    store, backend, _, reconciler = world
    controller = Controller(store, reconciler)
    store.apply(make_agent())
    broken = backend.observe
    backend.observe = lambda agent: (_ for _ in ()).throw(OSError("docker hiccup"))  # type: ignore[method-assign]
    for _ in range(3):
        controller.process(("default", "scout"))
    status = store.get("scout").status
    assert status.phase == "Failed" and status.backoff.retries == 3
    assert 0 < status.backoff.nextRetrySeconds <= BACKOFF_CAP
    assert condition(store, "scout", "Degraded").message == "docker hiccup"
    assert condition(store, "scout", "Stalled").status == "False"
    backend.observe = broken  # type: ignore[method-assign]
    controller.process(("default", "scout"))
    assert store.get("scout").status.phase == "Running" and store.get("scout").status.backoff is None
    assert ("default", "scout") not in controller.failures


def test_a_terminal_error_is_stalled_and_retried_only_slowly(world) -> None:
    store, backend, _, reconciler = world
    backend.foreign.add("den-scout")
    controller = Controller(store, reconciler)
    store.apply(make_agent())
    controller.process(("default", "scout"))
    status = store.get("scout").status
    assert status.backoff.nextRetrySeconds == TERMINAL_RETRY
    assert condition(store, "scout", "Stalled").reason == "NameConflict"


def test_the_work_queue_never_hands_one_key_to_two_workers() -> None:
    queue, stop = WorkQueue(), threading.Event()
    queue.add(("default", "a"))
    assert queue.get(stop) == ("default", "a")
    queue.add(("default", "a"))
    queue.add(("default", "b"))
    assert queue.get(stop) == ("default", "b")
    stop_soon = threading.Timer(0.3, stop.set)
    stop_soon.start()
    assert queue.get(stop) is None  # "a" waits for done()
    stop.clear()
    queue.done(("default", "a"))
    assert queue.get(stop) == ("default", "a")


def test_a_fleet_is_reconciled_by_several_workers_at_once(world) -> None:
    store, backend, _, reconciler = world
    backend.delay = 0.05
    for i in range(12):
        store.apply(make_agent(f"a{i}"))
    controller = Controller(store, reconciler, workers=4)
    runner = threading.Thread(target=controller.run, daemon=True)
    runner.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if all(a.status and a.status.phase == "Running" for a in store.list()):
            break
        time.sleep(0.05)
    controller.stop.set()
    runner.join(timeout=10)
    assert all(a.status.phase == "Running" for a in store.list())
    assert backend.most_active > 1
    nets = [c for c in backend.containers.values() if c["name"].endswith("-net")]
    assert len({c["port"] for c in nets}) == 12
    assert len({c["labels"][names.LABEL_ADDRESS] for c in nets}) == 12  # one address each


def test_readiness_is_answered_at_once_and_probed_off_the_worker() -> None:
    release, changed = threading.Event(), []
    prober = ReadinessProber(on_change=changed.append, probe=lambda endpoint: release.wait(5))
    started = time.monotonic()
    assert prober.ready(("default", "slow"), "http://127.0.0.1:1") is False
    assert time.monotonic() - started < 0.5
    release.set()
    deadline = time.monotonic() + 5
    while not changed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert changed == [("default", "slow")]
    assert prober.ready(("default", "slow"), "http://127.0.0.1:1") is True
    prober.close()


def test_missing_variable_names_the_field_and_the_variable() -> None:
    agent = make_agent(runtime={"env": {"A": "x-${ONE}", "B": "${TWO}"}})
    with pytest.raises(MissingVariable) as raised:
        resolve_env(agent, {"ONE": "1"})
    assert raised.value.variable == "TWO" and "runtime.env.B" in str(raised.value)
    assert resolve_env(agent, {"ONE": "1", "TWO": "2"}, {"TWO": "ignored"}) == {"A": "x-1", "B": "2"}


def test_a_new_container_is_not_ready_on_what_the_previous_one_answered(tmp_path: Path) -> None:
    """`den down` then `den up`: the prober's last answer was the old container's; the new one
    must be probed before the agent is Running (or `den up` returns before it answers)."""
    answers = {"ready": True}
    prober = ReadinessProber(probe=lambda endpoint: answers["ready"])
    store = Store(tmp_path / "state.db")
    reconciler = Reconciler(store, FakeBackend(), credentials=FakeCredentials(), readiness=prober)
    store.apply(make_agent())
    reconciler.reconcile("default", "scout")
    deadline = time.monotonic() + 5
    while store.get("scout").status.phase != "Running" and time.monotonic() < deadline:
        time.sleep(0.05)
        reconciler.reconcile("default", "scout")
    assert store.get("scout").status.phase == "Running"
    store.apply(make_agent(desiredState="stopped"))
    reconciler.reconcile("default", "scout")
    answers["ready"] = False  # the new container is still starting
    store.apply(make_agent())
    reconciler.reconcile("default", "scout")
    assert store.get("scout").status.phase == "Starting"
    prober.close()
    store.close()
