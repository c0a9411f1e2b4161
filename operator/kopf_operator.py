"""The operator on Kubernetes: thin kopf handlers around the shared Reconciler.

kopf's handlers are edge-triggered, so create, update, resume and delete, a
resync task, and events of the agents' StatefulSets and Services all call the
same level-triggered :meth:`~den.operator.reconcile.Reconciler.reconcile` with
the :class:`~den.operator.kubernetes_backend.KubernetesBackend` and the
:class:`~den.operator.kubernetes_store.KubernetesStore`. A spec Den's own
validation refuses gets a Failed status with the message ``den validate``
prints, and is not retried until it changes.

``den operator run --kubernetes`` runs :func:`run`; tests call :func:`build`
and :func:`operate` against kmock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from den.api.errors import InvalidAgentfile
from den.api.loader import dump_yaml, load_text
from den.api.resource import GROUP, PLURAL, VERSION, AgentStatus, Condition
from den.operator import names
from den.operator.cron import CronReport, fetch_cron
from den.operator.kube import Kube, operator_namespace
from den.operator.kube import agents as agents_path
from den.operator.kubernetes_backend import (
    KubernetesBackend,
    KubernetesCredentials,
    KubernetesReadiness,
)
from den.operator.kubernetes_render import gateway_url
from den.operator.kubernetes_store import KubernetesStore
from den.operator.reconcile import Reconciler, TerminalError

log = logging.getLogger("den.operator")

#: Seconds between resyncs of every Agent (drift the watches did not report).
RESYNC = float(os.environ.get("DEN_RESYNC_SECONDS", "30"))
#: A pass asked to look again (starting, deleting) is retried after this long at most.
MAX_REQUEUE = 5.0


def validation_problems(body: Mapping[str, Any], source: str) -> list[str]:
    """What ``den validate`` says of this Agent's spec (empty when it is valid)."""
    meta = body.get("metadata") or {}
    document = {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"),
                "metadata": {k: meta[k] for k in ("name", "namespace", "labels") if meta.get(k)},
                "spec": body.get("spec") or {}}
    _loaded, problems = load_text(dump_yaml(document), source)
    return [f"{p.path}: {p.message}" if p.path else p.message for p in problems]


@dataclass
class Den:
    """What the handlers share: one reconciler over one API connection."""

    kube: Kube
    store: KubernetesStore
    reconciler: Reconciler
    #: One pass per agent at a time (handlers, watches and the resync run in kopf's threads).
    locks: dict = field(default_factory=lambda: defaultdict(threading.Lock))

    def invalid(self, namespace: str, name: str, problems: list[str], generation: int | None) -> None:
        message = "; ".join(problems)
        agent_key = (namespace, name)
        status = AgentStatus(phase="Failed", observedGeneration=generation, conditions=[
            Condition(type="Ready", status="False", reason="Invalid", message=message,
                      observedGeneration=generation),
            Condition(type="Stalled", status="True", reason="Invalid", message=message,
                      observedGeneration=generation),
        ])
        self.store.update_status(name, namespace, status)
        self.store.record_event(agent_key, "Invalid", message, type_="Warning")

    def reconcile(self, body: Mapping[str, Any], *, retry: int = 0) -> float | None:
        """One pass; the seconds after which to look again, or None."""
        import kopf

        meta = body.get("metadata") or {}
        namespace, name = meta.get("namespace") or "default", meta["name"]
        if not meta.get("deletionTimestamp"):
            problems = validation_problems(body, f"agents/{name}")
            if problems:
                self.invalid(namespace, name, problems, meta.get("generation"))
                return None
        try:
            with self.locks[(namespace, name)]:
                result = self.reconciler.reconcile(namespace, name)
        except TerminalError as exc:
            self.reconciler.record_failure(namespace, name, exc, retry, RESYNC)
            return None
        except InvalidAgentfile as exc:
            self.invalid(namespace, name, [str(p) for p in exc.problems], meta.get("generation"))
            return None
        except ValidationError as exc:  # what the loader let through but the model refuses
            problems = [f"{'.'.join(str(part) for part in e['loc'])}: {e['msg']}" for e in exc.errors()]
            self.invalid(namespace, name, problems, meta.get("generation"))
            return None
        except Exception as exc:
            delay = min(2.0 ** retry, 60.0)
            self.reconciler.record_failure(namespace, name, exc, retry + 1, delay)
            raise kopf.TemporaryError(str(exc), delay=delay) from exc
        if result.requeue_after is None:
            return None
        return min(result.requeue_after, MAX_REQUEUE)


def build(kube: Kube, *, namespace: str | None = None, environ: Mapping[str, str] | None = None,
          cron_report: CronReport | None = fetch_cron) -> Den:
    """The reconciler on Kubernetes. ``cron_report`` reads a ready agent's ``GET /den/v1/cron``
    through its Service (the agent's NetworkPolicy admits the operator's namespace): status.cron,
    and a changed cron section re-applied to the agent's Secret, which the kubelet refreshes in
    the running pod (no restart)."""
    own = namespace or operator_namespace()
    store = KubernetesStore(kube)
    env = os.environ if environ is None else environ
    blocked = tuple(n.strip() for n in env.get("DEN_EGRESS_BLOCKED", "").split(",") if n.strip())
    backend = KubernetesBackend(kube, own, egress_blocked=blocked)
    reconciler = Reconciler(
        store, backend,  # type: ignore[arg-type]  # the store adapter has the methods it uses
        credentials=KubernetesCredentials(kube, own, env),
        readiness=KubernetesReadiness(kube),
        cron_report=cron_report,
        endpoint=lambda agent, port: f"http://{names.container_name(agent.name, agent.namespace)}."
                                     f"{agent.namespace}.svc:{port}",
        gateway_url=gateway_url(own),
    )
    return Den(kube, store, reconciler)


def register(den: Den, registry: Any) -> None:
    """The handlers: a few lines each, all calling :meth:`Den.reconcile`."""
    import kopf

    agents = {"group": GROUP, "version": VERSION, "plural": PLURAL, "registry": registry}

    @kopf.on.resume(**agents)
    @kopf.on.create(**agents)
    @kopf.on.update(**agents)
    def converge(body: Any, retry: int, **_: Any) -> None:
        # A pod becoming ready changes its StatefulSet's status: the watch below looks again.
        den.reconcile(body, retry=retry)

    @kopf.on.delete(**agents, optional=True)  # Den's own finalizer holds the object, not kopf's
    def delete(body: Any, retry: int, **_: Any) -> None:
        finish(body, retry)

    @kopf.on.event(**agents, when=lambda body, **_: bool(body.get("metadata", {}).get("deletionTimestamp")))
    def deleting(body: Any, **_: Any) -> None:
        finish(body, 0)

    def finish(body: Any, retry: int) -> None:
        """Passes until Den's finalizers are gone (each removes what the last one observed)."""
        meta = body["metadata"]
        for _attempt in range(20):
            fresh = den.store.find(meta["name"], meta.get("namespace", "default"))
            if fresh is None or not set(fresh.metadata.finalizers) & {names.FINALIZER, names.FINALIZER_DESTROY}:
                return
            den.reconcile(body, retry=retry)
        raise kopf.TemporaryError("still cleaning up", delay=1)

    owned = {"labels": {names.LABEL_MANAGED_BY: names.MANAGED_BY}, "registry": registry}

    def owner_changed(labels: Mapping[str, str], type: str | None) -> None:
        agent, namespace = labels.get(names.LABEL_AGENT), labels.get(names.LABEL_NAMESPACE)
        if not agent or not namespace:
            return
        current = den.kube.get(f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{agent}")
        if current and not (current.get("metadata") or {}).get("deletionTimestamp"):
            den.reconcile(current)

    @kopf.on.event("apps", "v1", "statefulsets", **owned)
    def statefulset_event(labels: Mapping[str, str], type: str | None, **_: Any) -> None:
        owner_changed(labels, type)

    @kopf.on.event("", "v1", "services", **owned)
    def service_event(labels: Mapping[str, str], type: str | None, **_: Any) -> None:
        if type == "DELETED":
            owner_changed(labels, type)


async def resync(den: Den, namespaces: list[str] | None) -> None:
    """Every :data:`RESYNC` seconds, a pass over every Agent (drift no watch reported). A task
    rather than a kopf timer: timers force kopf's finalizer onto every object."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(RESYNC)
        for namespace in namespaces or [None]:
            try:
                bodies = await loop.run_in_executor(None, den.kube.list, agents_path(namespace))
            except Exception as exc:  # the API is away: the next round tries again
                log.warning("resync: %s", exc)
                continue
            for body in bodies:
                if not (body.get("metadata") or {}).get("deletionTimestamp"):
                    with contextlib.suppress(Exception):  # recorded in status by reconcile
                        await loop.run_in_executor(None, den.reconcile, body)


def configure(settings: Any) -> None:
    """kopf settings: progress in annotations (status is Den's), no peering, quiet posting."""
    import kopf

    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kopf.den.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="kopf.den.dev", key="last-handled-configuration")
    settings.posting.level = logging.WARNING
    settings.peering.standalone = True
    settings.scanning.disabled = True  # watched namespaces are exact names (or all): no scanning
    settings.watching.server_timeout = 60


async def operate(kube: Kube, *, namespaces: list[str] | None, server: str | None = None,
                  namespace: str | None = None, environ: Mapping[str, str] | None = None,
                  stop_flag: asyncio.Event | None = None, ready_flag: asyncio.Event | None = None,
                  cron_report: CronReport | None = fetch_cron) -> None:
    """Run the operator in this event loop until ``stop_flag`` is set."""
    import kopf

    den = build(kube, namespace=namespace, environ=environ, cron_report=cron_report)
    registry = kopf.OperatorRegistry()
    register(den, registry)

    @kopf.on.startup(registry=registry)
    async def startup(settings: Any, memo: Any, **_: Any) -> None:
        configure(settings)
        memo.resync = asyncio.create_task(resync(den, namespaces))

    @kopf.on.cleanup(registry=registry)
    async def cleanup(memo: Any, **_: Any) -> None:
        memo.resync.cancel()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> Any:
        if server or kube.context is not None:
            return connection_info(kube)
        return kopf.login_via_client(**kwargs)  # in-cluster, or kubeconfig's current context

    await kopf.operator(
        registry=registry, standalone=True, clusterwide=not namespaces,
        namespaces=namespaces or [], stop_flag=stop_flag, ready_flag=ready_flag,
    )


def connection_info(kube: Kube) -> Any:
    """kopf's credentials from the ones :class:`Kube` loaded (the same kubeconfig context)."""
    import kopf

    config = kube.api_client.configuration
    token = (config.api_key or {}).get("authorization") or (config.api_key or {}).get("BearerToken")
    scheme, _, value = (token or "").partition(" ")
    return kopf.ConnectionInfo(
        server=config.host, ca_path=config.ssl_ca_cert, insecure=not config.verify_ssl,
        certificate_path=config.cert_file, private_key_path=config.key_file,
        scheme=(scheme or None) if value else None, token=(value or token) or None,
    )


def run(*, namespaces: list[str] | None, context: str | None = None) -> int:
    """``den operator run --kubernetes``: watch Agents in ``namespaces`` (all when empty)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    kube = Kube.connect(context=context)
    asyncio.run(operate(kube, namespaces=namespaces))
    return 0
