"""The Agent resource: the Kubernetes envelope around an Agentfile.

``apiVersion: den.dev/v1alpha1``, ``kind: Agent``, ``metadata``, ``spec`` (the
Agentfile body plus ``desiredState``) and ``status`` (written only by the
reconciler). :func:`to_agent` and :func:`to_agentfile` convert losslessly.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from den.api.agentfile import Agentfile, AgentSpec, validate_dns_label, validate_labels

GROUP = "den.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "Agent"
PLURAL = "agents"
SHORT_NAMES = ["ag", "den"]

def now() -> str:
    """An RFC 3339 timestamp in UTC with second precision, like Kubernetes writes."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ObjectMeta(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str
    namespace: str = "default"
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    # Written by the store (or the Kubernetes API server); ignored on apply.
    uid: str | None = None
    generation: int | None = None
    resourceVersion: str | None = None  # noqa: N815
    creationTimestamp: str | None = None  # noqa: N815
    deletionTimestamp: str | None = None  # noqa: N815
    finalizers: list[str] = Field(default_factory=list)

    @field_validator("name", "namespace")
    @classmethod
    def _dns(cls, value: str) -> str:
        return validate_dns_label(value)

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        return validate_labels(value)


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str
    status: ConditionStatus
    reason: str = ""
    message: str = ""
    lastTransitionTime: str = Field(default_factory=now)  # noqa: N815
    observedGeneration: int | None = None  # noqa: N815


class CronStatus(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    schedule: str = ""
    nextRun: str | None = None  # noqa: N815
    lastRun: str | None = None  # noqa: N815
    lastResult: str | None = None  # noqa: N815
    origin: str = "agentfile"  # agentfile | agent (made by the agent with schedule_task)
    suspended: bool = False


Phase = Literal["Pending", "Starting", "Running", "Stopped", "Failed", "Terminating"]


class Backoff(BaseModel):
    """How the operator is retrying a failed reconcile."""

    model_config = ConfigDict(extra="forbid")

    retries: int = Field(..., ge=0, description="Failed reconciles in a row.")
    nextRetrySeconds: float = Field(..., ge=0, description="Seconds until the next try.")  # noqa: N815


class Usage(BaseModel):
    """Today's model use as the gateway's ledger counts it (UTC day)."""

    model_config = ConfigDict(extra="forbid")

    day: str
    requests: int = 0
    refused: int = 0
    tokens: int = 0
    costUsd: float = 0.0  # noqa: N815
    overBudget: bool = False  # noqa: N815


class NetworkStatus(BaseModel):
    """The agent's effective network policy and what its egress proxy counted."""

    model_config = ConfigDict(extra="forbid")

    policy: str
    reaches: str = ""
    address: str | None = Field(None, description="Its address on Den's network.")
    allow: list[str] = Field(default_factory=list)
    allowed: int = Field(0, description="Connections the egress proxy let through.")
    refused: int = Field(0, description="Connections the egress proxy refused.")
    lastRefused: str | None = None  # noqa: N815


class AgentStatus(BaseModel):
    """Observed state, written only by the reconciler."""

    model_config = ConfigDict(extra="forbid")

    phase: Phase = "Pending"
    observedGeneration: int | None = None  # noqa: N815
    conditions: list[Condition] = Field(default_factory=list)
    endpoint: str | None = None
    port: int | None = Field(None, ge=1, le=65535, description="Host port of the agent's API (kept across down/up).")
    backoff: Backoff | None = None
    gateway: str | None = Field(None, description="The model gateway the agent's calls go through.")
    usage: Usage | None = None
    network: NetworkStatus | None = None
    cron: list[CronStatus] = Field(default_factory=list)
    nextRun: str | None = Field(None, description="The soonest next run of the agent's cron entries.")  # noqa: N815

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)


class Agent(BaseModel):
    """The Agent resource, as stored locally and as a Kubernetes custom resource."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    apiVersion: Literal["den.dev/v1alpha1"] = API_VERSION  # noqa: N815
    kind: Literal["Agent"] = KIND
    metadata: ObjectMeta
    spec: AgentSpec
    status: AgentStatus | None = None

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace

    @property
    def key(self) -> str:
        return f"{self.metadata.namespace}/{self.metadata.name}"

    def manifest(self, *, with_status: bool = True) -> dict[str, Any]:
        """The resource as plain data, in Kubernetes field order, without empty server fields."""
        data = self.model_dump(mode="json", exclude_none=True)
        meta = data["metadata"]
        for empty in ("labels", "annotations", "finalizers"):
            if not meta.get(empty):
                meta.pop(empty, None)
        if not with_status or self.status is None:
            data.pop("status", None)
        return data


def to_agent(agentfile: Agentfile) -> Agent:
    """An Agentfile as an Agent resource (lossless: see :func:`to_agentfile`)."""
    body = agentfile.model_dump(exclude={"name", "namespace", "labels", "annotations"})
    return Agent(
        metadata=ObjectMeta(
            name=agentfile.name,
            namespace=agentfile.namespace,
            labels=dict(agentfile.labels),
            annotations=dict(agentfile.annotations),
        ),
        spec=AgentSpec.model_validate(body),
    )


def to_agentfile(agent: Agent) -> Agentfile:
    """An Agent resource as an Agentfile; server-written fields and status are dropped."""
    return Agentfile.model_validate(
        {
            "name": agent.metadata.name,
            "namespace": agent.metadata.namespace,
            "labels": dict(agent.metadata.labels),
            "annotations": dict(agent.metadata.annotations),
            **agent.spec.model_dump(),
        }
    )


def agentfile_document(agentfile: Agentfile) -> dict[str, Any]:
    """An Agentfile as the YAML a person would write: defaults left out."""
    return agentfile.model_dump(mode="json", exclude_defaults=True)
