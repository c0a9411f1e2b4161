"""The real kopf operator against kmock (a stateful Kubernetes API emulator), in one event loop.

kmock serves the API on 127.0.0.1; the operator runs as a task of the test's loop and its
sync handlers (the shared Reconciler) run in kopf's thread pool, talking HTTP to kmock. kmock
keeps objects as JSON and merges patches; it has no controllers (nothing makes pods, no
garbage collection, no schema validation), so tests play the kubelet where they need one.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import kmock
import pytest_asyncio
import yaml
from kmock._internal.dicts import patch_dict

from den.api.resource import GROUP, PLURAL, VERSION
from den.operator.kube import Kube

ROOT = Path(__file__).resolve().parents[2]
OPERATOR_NAMESPACE = "den-system"
AGENTS = f"{GROUP}/{VERSION}/{PLURAL}"
RESOURCES = {
    AGENTS: dict(namespaced=True, kind="Agent", singular="agent", verbs=["list", "watch", "get", "patch"],
                 subresources=["status"]),
    "apps/v1/statefulsets": dict(namespaced=True, kind="StatefulSet", verbs=["list", "watch", "get"]),
    "v1/services": dict(namespaced=True, kind="Service", verbs=["list", "watch", "get"]),
    "v1/secrets": dict(namespaced=True, kind="Secret", verbs=["list", "get"]),
    "v1/persistentvolumeclaims": dict(namespaced=True, kind="PersistentVolumeClaim", verbs=["list", "get"]),
    "v1/namespaces": dict(namespaced=False, kind="Namespace", verbs=["list", "watch", "get"]),
    "v1/pods": dict(namespaced=True, kind="Pod", verbs=["list", "get"], subresources=["log"]),
    "v1/events": dict(namespaced=True, kind="Event", verbs=["create"]),
    "networking.k8s.io/v1/networkpolicies": dict(namespaced=True, kind="NetworkPolicy", verbs=["list", "get"]),
    "apiextensions.k8s.io/v1/customresourcedefinitions": dict(namespaced=False, kind="CustomResourceDefinition",
                                                               verbs=["list", "get"]),
}


def crd() -> dict:
    return yaml.safe_load((ROOT / "crds" / "agents.den.dev.yaml").read_text())


async def eventually(check: Callable[[], object], timeout: float = 10.0, what: str = "") -> object:
    """Poll ``check`` (sync; run in a thread so the loop keeps serving kmock) until truthy."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = await asyncio.to_thread(check)
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or check}: last saw {last!r}")


_VERSIONS = itertools.count(1)


class Cluster(kmock.KubernetesEmulator):
    """kmock plus the server-written fields kopf and Den rely on: uid, creationTimestamp,
    a resourceVersion bumped on every write (a stale one is a 409 Conflict), and a generation
    bumped when the spec changes; and a pod's ``log`` subresource (kmock has none): what a test,
    playing the kubelet, put in ``pod_logs[namespace, pod]``, for a pod that exists (else 404),
    the last ``tailLines`` of it; ``follow`` answers chunked, as the kubelet does, and ends
    with what is there (the emulated container has exited)."""

    #: (namespace, pod name) -> the container's output so far.
    pod_logs: dict[tuple[str, str], str]

    async def _handle(self, request):  # type: ignore[override]
        if request.subresource == "log" and request.resource is not None and request.resource.plural == "pods":
            return await self._log(request)
        if request.resource is not None and request.action is not None:
            self._stamp(request)
        return await super()._handle(request)

    async def _log(self, request):
        from aiohttp import web

        key = (request.resource, request.namespace, request.name)
        if key not in self.objects or self.objects[key].deleted:
            return web.json_response({"kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404,
                                      "message": f'pods "{request.name}" not found'}, status=404)
        lines = self.pod_logs.get((request.namespace, request.name), "").splitlines(keepends=True)
        if request.params.get("tailLines"):
            lines = lines[-int(request.params["tailLines"]):] if int(request.params["tailLines"]) else []
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        if request.params.get("follow") == "true":
            response.enable_chunked_encoding()
        await response.prepare(request._raw_request)
        for line in lines:
            await response.write(line.encode())
        await response.write_eof()
        return response

    def _stamp(self, request) -> None:
        data, version = request.data, str(next(_VERSIONS))
        if request.action == kmock.action.CREATE and isinstance(data, dict):
            meta = data.setdefault("metadata", {})
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("generation", 1)
            meta.setdefault("creationTimestamp", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            meta["resourceVersion"] = version
        elif request.action == kmock.action.UPDATE and request.name is not None:
            key = (request.resource, request.namespace, request.name)
            if key not in self.objects or self.objects[key].deleted:
                return
            current = copy.deepcopy(dict(self.objects[key].raw))
            if not isinstance(data, dict):  # JSON patches (kopf's finalizer) carry their own test
                return
            meta = data.setdefault("metadata", {})
            stale = meta.get("resourceVersion")
            if stale and stale != current.get("metadata", {}).get("resourceVersion"):
                raise kmock.KubernetesError(status=409, reason="Conflict",
                                            message="the object has been modified")
            meta["resourceVersion"] = version
            if request.subresource == "status":
                data.pop("spec", None)
            elif "spec" in data and patch_dict(copy.deepcopy(current), data).get("spec") != current.get("spec"):
                meta["generation"] = int(current.get("metadata", {}).get("generation") or 1) + 1


@pytest_asyncio.fixture
async def cluster() -> AsyncIterator[Cluster]:
    async with Cluster() as kmock_, kmock.Server(kmock_):
        yield await _load(kmock_)


async def _load(kmock: Cluster) -> Cluster:
    kmock.pod_logs = {}
    for key, info in RESOURCES.items():
        kmock.resources[key] = info
    for namespace in ("default", OPERATOR_NAMESPACE):
        kmock.objects["v1/namespaces", None, namespace] = {
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": namespace, "labels": {"kubernetes.io/metadata.name": namespace}}}
    # The CRD is loaded the way `kubectl apply -f crds/` loads it.
    kmock.objects["apiextensions.k8s.io/v1/customresourcedefinitions", None, "agents.den.dev"] = crd()
    return kmock


@pytest_asyncio.fixture
async def operator(cluster) -> AsyncIterator[Kube]:
    """The real kopf operator (``den operator run --kubernetes``'s code) against kmock."""
    async with running_operator(cluster) as kube:
        yield kube


@contextlib.asynccontextmanager
async def running_operator(cluster, cron_report=None) -> AsyncIterator[Kube]:
    """The operator in this loop until the block ends. ``cron_report`` stands in for the agent's
    Service (kmock runs no pods): None reports nothing, and no test resolves a ``.svc`` name."""
    from den.operator.kopf_operator import operate

    server = str(cluster.url).rstrip("/")
    kube = Kube.connect(server=server)
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(operate(kube, namespaces=["default"], server=server,
                                       namespace=OPERATOR_NAMESPACE, environ={"SEARCH_KEY": "s3cret", "OPENAI_API_KEY": "sk-test",
                                                "DEN_EGRESS_BLOCKED": "10.0.0.0/8, 192.168.0.0/16"},
                                       stop_flag=stop, ready_flag=ready, cron_report=cron_report))
    await asyncio.wait_for(ready.wait(), 10)
    try:
        yield kube
    finally:
        stop.set()
        done, _ = await asyncio.wait({task}, timeout=3)
        if not done:  # kopf waits for handlers still retrying; nothing of theirs outlives the test
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
