"""Agent custom resources as the reconciler's store (the SQLite store's methods it uses).

The reconciler re-reads the Agent, adds and removes finalizers, writes status
and records events; here those are a GET of the custom resource, merge patches
guarded by resourceVersion (a Conflict is retried, like ``Store.mutate``), a
merge patch of the ``status`` subresource (never a replace of the object), and
core/v1 Events. ``den --context`` uses the same class for get/apply/delete.

On a cluster, deleting an Agent is ``den destroy``: the finalizers added here
are the cleanup one and the destroy one, so the PVC goes with the Agent.
``den delete --context`` without ``--destroy`` drops the destroy finalizer first.
"""

from __future__ import annotations

import uuid
from typing import Any

from den.api.errors import Conflict, NotFound
from den.api.resource import API_VERSION, KIND, Agent, AgentStatus, ObjectMeta, now
from den.operator import names
from den.operator.kube import Kube, agents, core

#: Fields kopf and the API server add that Den's models do not know are dropped on read.
_META = set(ObjectMeta.model_fields)
_STATUS = set(AgentStatus.model_fields)


def agent_from_object(obj: dict[str, Any]) -> Agent:
    """An Agent custom resource as Den's model (raises pydantic's ValidationError on a bad spec)."""
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k in _META and v is not None}
    meta.setdefault("namespace", "default")
    meta["annotations"] = {k: v for k, v in (meta.get("annotations") or {}).items()
                           if not k.startswith(("kopf.zalando.org/", "kopf.den.dev/")) and "last-applied" not in k}
    status = {k: v for k, v in (obj.get("status") or {}).items() if k in _STATUS}
    return Agent.model_validate({"apiVersion": API_VERSION, "kind": KIND, "metadata": meta,
                                 "spec": obj.get("spec") or {}, "status": status or None})


def status_of(obj: dict[str, Any]) -> AgentStatus | None:
    status = {k: v for k, v in (obj.get("status") or {}).items() if k in _STATUS}
    try:
        return AgentStatus.model_validate(status) if status else None
    except ValueError:
        return None


def object_from_agent(agent: Agent) -> dict[str, Any]:
    """What ``den up --context`` sends: the resource without server-written fields."""
    body = agent.manifest(with_status=False)
    meta = body["metadata"]
    for server in ("uid", "generation", "resourceVersion", "creationTimestamp", "deletionTimestamp",
                   "finalizers"):
        meta.pop(server, None)
    return body


class KubernetesStore:
    kind = "Agent"

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    def _path(self, name: str, namespace: str) -> str:
        return f"{agents(namespace)}/{name}"

    # -- read -------------------------------------------------------------------

    def find(self, name: str, namespace: str = "default") -> Agent | None:
        obj = self.kube.get(self._path(name, namespace))
        return agent_from_object(obj) if obj else None

    def get(self, name: str, namespace: str = "default") -> Agent:
        agent = self.find(name, namespace)
        if agent is None:
            raise NotFound(f'agent "{name}" not found in namespace "{namespace}"')
        return agent

    def list(self, namespace: str | None = None, selector: str | None = None) -> list[Agent]:
        """Agents in ``namespace`` (all when None) matching a label ``selector`` (Den's grammar,
        checked here: the server's is the same for these forms)."""
        from den.operator.selectors import parse_selector

        wanted = parse_selector(selector)
        found = [agent_from_object(i) for i in self.kube.list(agents(namespace))]
        return sorted((a for a in found if wanted.matches(a.metadata.labels)), key=lambda a: (a.namespace, a.name))

    # -- write ------------------------------------------------------------------

    def apply(self, agent: Agent) -> Agent:
        """Create, or replace spec, labels and annotations of what exists (generation bumps
        on the server when the spec changed)."""
        body = object_from_agent(agent)
        body["metadata"].setdefault("labels", {})
        body["metadata"].setdefault("annotations", {})
        return agent_from_object(self.kube.apply(agents(agent.namespace), body))

    def patch_spec(self, name: str, namespace: str, spec: dict[str, Any]) -> Agent:
        return agent_from_object(self.kube.patch(self._path(name, namespace), {"spec": spec}))

    def delete(self, name: str, namespace: str = "default", *, destroy: bool = True) -> None:
        if not destroy:
            self._finalizers(name, namespace, remove=names.FINALIZER_DESTROY)
        if not self.kube.delete(self._path(name, namespace)):
            raise NotFound(f'agent "{name}" not found in namespace "{namespace}"')

    def _finalizers(self, name: str, namespace: str, *, add: tuple[str, ...] = (),
                    remove: str | None = None) -> Agent:
        for _attempt in range(5):
            obj = self.kube.get(self._path(name, namespace))
            if obj is None:
                raise NotFound(f'agent "{name}" not found in namespace "{namespace}"')
            meta = obj["metadata"]
            current = list(meta.get("finalizers") or [])
            wanted = [f for f in current if f != remove] + [f for f in add if f not in current]
            if wanted == current:
                return agent_from_object(obj)
            try:
                patched = self.kube.patch(self._path(name, namespace), {"metadata": {
                    "finalizers": wanted, "resourceVersion": meta.get("resourceVersion")}})
                return agent_from_object(patched)
            except Conflict:
                continue
        raise Conflict(f"agent {namespace}/{name} kept changing while its finalizers were updated")

    def add_finalizer(self, name: str, namespace: str, finalizer: str) -> Agent:
        added = (finalizer, names.FINALIZER_DESTROY) if finalizer == names.FINALIZER else (finalizer,)
        return self._finalizers(name, namespace, add=added)

    def remove_finalizer(self, name: str, namespace: str, finalizer: str) -> Agent:
        return self._finalizers(name, namespace, remove=finalizer)

    def update_status(self, name: str, namespace: str, status: AgentStatus, **_: Any) -> Agent:
        """A merge patch of the status subresource; fields now unset are removed (null). Nothing
        is written when the status is what the Agent already has (no watch event, no loop)."""
        current = self.kube.get(self._path(name, namespace))
        if current is None:
            raise NotFound(f'agent "{name}" not found in namespace "{namespace}"')
        if status_of(current) == status:
            return None  # type: ignore[return-value]  # the reconciler ignores it
        body: dict[str, Any] = {k: None for k in _STATUS}
        body.update(status.model_dump(mode="json", exclude_none=True))
        self.kube.patch(f"{self._path(name, namespace)}/status", {"status": body})
        return None  # type: ignore[return-value]  # the spec may be one Den refuses (Failed)

    def record_event(self, agent: Agent | tuple[str, str], reason: str, message: str, *,
                     type_: str = "Normal") -> None:
        if isinstance(agent, Agent):
            namespace, name, uid = agent.namespace, agent.name, agent.metadata.uid
        else:
            (namespace, name), uid = agent, None
        stamp = now()
        event = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{name}.{uuid.uuid4().hex[:16]}", "namespace": namespace},
            "involvedObject": {"apiVersion": API_VERSION, "kind": KIND, "name": name,
                               "namespace": namespace, **({"uid": uid} if uid else {})},
            "reason": reason, "message": message[:1024], "type": type_,
            "source": {"component": "den-operator"}, "reportingComponent": "den-operator",
            "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
        }
        try:
            self.kube.create(core(namespace, "events"), event)
        except Exception:  # an event is best effort, like kubectl's recorder
            pass
