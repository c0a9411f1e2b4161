"""The Agentfile: what an agent is, as pydantic v2 models.

These models are the single source of truth: the CLI validates with them,
the CRD's OpenAPI schema is generated from them (``den.api.crd``) and the
reference in ``docs/agentfile.md`` is checked against them.

Only ``name`` and ``model`` (``provider`` and ``name``) are required.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

#: The built-in tools every runtime ships, in the order the docs list them.
BUILTIN_TOOLS: tuple[str, ...] = (
    "web_search",
    "web_fetch",
    "file_read",
    "file_write",
    "file_list",
    "shell_exec",
    "memo_write",
    "memo_search",
    "memo_list",
    "http_request",
    "schedule_task",
)

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
TOOL_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MEMORY_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_UNIT_MB = {"": 1, "b": 1 / (1024 * 1024), "k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}

DEFAULT_IMAGE = "den-runtime:latest"


class _Model(BaseModel):
    """Base for every Agentfile section: unknown fields are errors."""

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        use_enum_values=True,
        validate_default=True,  # enum defaults become their values too
        allow_inf_nan=False,
    )


class NetworkMode(str, Enum):
    none = "none"
    filtered = "filtered"
    host = "host"


def parse_memory_mb(value: Any) -> int:
    """``512`` (MB), ``"512m"``, ``"2g"``, ``"1.5G"``, ``"256Mi"`` -> MB as an int."""
    if isinstance(value, bool):
        raise ValueError("expected megabytes as an integer or a size like '512m' or '2g'")
    if isinstance(value, int):
        mb = value
    elif isinstance(value, float) and value.is_integer():
        mb = int(value)
    elif isinstance(value, str):
        match = MEMORY_SIZE.match(value)
        if not match:
            raise ValueError(f"expected a size like '512m' or '2g', got {value!r}")
        number, unit = match.groups()
        unit = (unit or "").lower()[:1]
        mb = int(float(number) * _UNIT_MB[unit])
    else:
        raise ValueError("expected megabytes as an integer or a size like '512m' or '2g'")
    if mb < 16:
        raise ValueError(f"must be at least 16 MB, got {mb} MB")
    if mb > 1024 * 1024:
        raise ValueError(f"must be at most 1 TB (1048576 MB), got {mb} MB")
    return mb


class BudgetSpec(_Model):
    """Daily spend limits enforced by the model gateway (per UTC day)."""

    usd_per_day: float | None = Field(
        None, gt=0, description="Model spend per UTC day in US dollars (litellm's price map); over it, calls are refused.",
        examples=[5.0],
    )
    tokens_per_day: int | None = Field(
        None, gt=0, description="Prompt plus completion tokens per UTC day; over it, calls are refused.",
        examples=[200000],
    )


class RuntimeSpec(_Model):
    """Where and how the agent runs: image, limits, network policy, environment, spend budget."""

    base: str = Field(
        DEFAULT_IMAGE,
        min_length=1,
        description="Container image the agent runs in.",
        examples=["den-runtime:latest"],
    )
    memory: int = Field(
        512,
        description="Memory limit in MB; also accepts sizes like '512m' or '2g'.",
        examples=["1g"],
    )
    cpu: float = Field(1.0, gt=0, le=64, description="CPU limit in cores (may be fractional).")
    network: NetworkMode = Field(
        NetworkMode.filtered,
        description="none: no egress; filtered: egress only to `allow`; host: unrestricted.",
    )
    allow: list[str] = Field(
        default_factory=list,
        description="Hosts the agent may reach when network is filtered: 'example.com' (that host), "
                    "'*.example.com' (its subdomains only), optionally ':port' (default 80 and 443).",
        examples=[["api.openai.com", "*.wikipedia.org"]],
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Environment variables; values may reference ${VAR}, resolved at start, never stored resolved.",
    )
    budget: BudgetSpec = Field(
        default_factory=BudgetSpec,
        description="Daily model spend limits, enforced by the model gateway.",
    )
    max_tasks: int = Field(
        10, ge=0, le=1000, description="How many tasks the agent may schedule itself with schedule_task (0: none).",
    )
    task_min_interval: int = Field(
        300, ge=60, le=31 * 86400,
        description="Seconds that must at least pass between two runs of a task the agent schedules itself.",
    )
    max_request_bytes: int | None = Field(
        None, ge=1024, le=1024 * 1024 * 1024,
        description="The largest request body the agent's API accepts, in bytes (larger: 413). Default: "
                    "8 bytes per token of model.context_window, at least 1 MiB (1048576), at most 32 MiB.",
        examples=[8388608],
    )

    @field_validator("memory", mode="before")
    @classmethod
    def _memory(cls, value: Any) -> int:
        return parse_memory_mb(value)

    @field_validator("allow")
    @classmethod
    def _allow(cls, value: list[str]) -> list[str]:
        from den.api.netpolicy import AllowError, parse_allow

        try:
            parse_allow(value)
        except AllowError as exc:
            raise LocatedError((exc.index,), str(exc)) from None  # type: ignore[attr-defined]
        return [entry.strip().lower().rstrip(".") for entry in value]

    @field_validator("env", mode="before")
    @classmethod
    def _env_scalars(cls, value: Any) -> Any:
        if isinstance(value, dict):
            out: dict[Any, Any] = {}
            for key, item in value.items():
                if isinstance(item, bool):
                    item = "true" if item else "false"
                elif isinstance(item, int | float):
                    item = str(item)
                out[key] = item
            return out
        return value

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not ENV_NAME.match(key):
                raise LocatedError(
                    (key,), f"{key!r} is not a valid environment variable name (letters, digits, _)"
                )
        return value

    @model_validator(mode="after")
    def _allow_needs_filtered(self) -> RuntimeSpec:
        if self.allow and self.network != NetworkMode.filtered.value:
            raise ValueError(
                f"allow is only used with network: filtered (network is {self.network!r})"
            )
        return self


class ModelSpec(_Model):
    """The language model the agent thinks with (any litellm provider)."""

    provider: str = Field(
        ..., min_length=1, description="litellm provider: openai, anthropic, ollama, ...",
        examples=["openai"],
    )
    name: str = Field(..., min_length=1, description="Model name at the provider.", examples=["gpt-4o"])
    temperature: float = Field(0.7, ge=0, le=2, description="Sampling temperature, 0..2.")
    max_tokens: int = Field(4096, gt=0, description="Upper bound on tokens per completion.")
    base_url: str | None = Field(
        None,
        description="An OpenAI-compatible endpoint to use instead of the provider's default.",
        examples=["http://host.docker.internal:11434/v1"],
    )
    context_window: int | None = Field(
        None, ge=256, le=10_000_000,
        description="The model's context window in tokens. Den keeps every request within it (oldest turns "
                    "are summarized into memory and left out; the completion gets at most a quarter). "
                    "Default: 8192 for the prompt budget.",
        examples=[128000],
    )

    @field_validator("provider", "name")
    @classmethod
    def _no_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/]+", value):
            raise ValueError(f"expected an http(s) URL, got {value!r}")
        return value


class Verbosity(str, Enum):
    concise = "concise"
    balanced = "balanced"
    detailed = "detailed"


class PersonalitySpec(_Model):
    tone: str = Field("neutral", min_length=1, description="How the agent sounds, e.g. friendly, formal.")
    verbosity: Verbosity = Field(Verbosity.balanced, description="concise, balanced or detailed.")


class IdentitySpec(_Model):
    """Who the agent is: injected into every turn."""

    system_prompt: str = Field(
        "You are a helpful assistant.", description="The agent's standing instructions."
    )
    personality: PersonalitySpec = Field(default_factory=PersonalitySpec)


#: Where the postgres memory backend finds its server (a runtime.env entry).
MEMORY_DSN_ENV = "DEN_MEMORY_DSN"


class MemoryBackend(str, Enum):
    sqlite = "sqlite"
    postgres = "postgres"


class MemorySpec(_Model):
    """Long-term memory, kept on the agent's volume."""

    backend: MemoryBackend = Field(
        MemoryBackend.sqlite,
        description="sqlite (on the agent's volume) or postgres (PostgreSQL with pgvector at runtime.env.DEN_MEMORY_DSN).",
    )
    semantic_recall: bool = Field(
        True, description="Recall memories by meaning as well as keywords (vectors and FTS5, fused) on every turn."
    )
    fact_extraction: bool = Field(
        True, description="After each turn, ask the model for durable facts and keep them (superseded facts keep their history)."
    )
    max_context_memories: int = Field(
        10, ge=0, le=100, description="How many recalled memories are injected into each turn."
    )
    embedding_model: str = Field(
        "wordllama", min_length=1, max_length=200,
        description="wordllama (built in, no download) or a provider embedding model called through the "
                    "model gateway, e.g. text-embedding-3-small. Changing it re-embeds in the background.",
        examples=["text-embedding-3-small"],
    )


class CustomToolSpec(_Model):
    """A tool the agent's image provides through the `den.tools` entry point group."""

    name: str = Field(..., description="Entry point name in the `den.tools` group.")
    description: str | None = Field(None, description="What the tool does (overrides the tool's own).")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not TOOL_NAME.match(value):
            raise ValueError(
                f"{value!r} is not a tool name (lowercase letters, digits and _, starting with a letter)"
            )
        if value in BUILTIN_TOOLS:
            raise ValueError(f"{value!r} is a built-in tool; list it under tools instead")
        return value


class CheckTrigger(str, Enum):
    before_respond = "before_respond"


class CheckKind(str, Enum):
    llm = "llm"
    regex = "regex"


class CheckSpec(_Model):
    """A judgement applied to the agent's answer before it goes out."""

    name: str = Field(..., min_length=1, description="Unique name of the check.")
    description: str = Field(..., min_length=1, description="What a good answer satisfies (the judge's rubric).")
    on: CheckTrigger = Field(CheckTrigger.before_respond, description="When the check runs.")
    kind: CheckKind = Field(CheckKind.llm, description="llm (a judge prompt) or regex (deterministic).")
    pattern: str | None = Field(None, description="For kind regex: the answer must match this pattern.")
    max_retries: int = Field(2, ge=0, le=10, description="Revisions allowed when the check fails.")

    @model_validator(mode="after")
    def _pattern(self) -> CheckSpec:
        if self.kind == CheckKind.regex.value:
            if not self.pattern:
                raise ValueError("kind regex needs a pattern")
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"pattern is not a valid regular expression: {exc}") from None
        elif self.pattern is not None:
            raise ValueError("pattern is only used with kind: regex")
        return self


class LoopType(str, Enum):
    research = "research"
    plan = "plan"
    execute = "execute"
    verify = "verify"


class LoopSpec(_Model):
    """A structured loop the agent can run (in the order listed)."""

    type: LoopType = Field(..., description="research, plan, execute or verify.")
    max_iterations: int = Field(5, ge=1, le=100, description="Hard cap on iterations.")
    tools: list[str] = Field(
        default_factory=list, description="Tools this loop may use: a subset of the agent's tools."
    )
    criteria: list[str] = Field(
        default_factory=list, description="For verify: what the work must satisfy."
    )


class ConcurrencyPolicy(str, Enum):
    Forbid = "Forbid"
    Allow = "Allow"
    Replace = "Replace"


class CronSpec(_Model):
    """A prompt the agent runs on a schedule, inside its own container (Kubernetes CronJob rules)."""

    name: str = Field(..., description="Unique name of the entry (DNS label).")
    schedule: str = Field(..., description="A cron expression, e.g. '0 9 * * 1-5'.", examples=["0 9 * * 1-5"])
    prompt: str = Field(..., min_length=1, description="What the agent is asked at each run.")
    timezone: str = Field("UTC", description="IANA time zone the schedule is read in, e.g. 'Europe/Paris'.",
                          examples=["Europe/Paris"])
    loop: LoopType | None = Field(None, description="Run the prompt through this loop (must be declared).")
    chain: bool = Field(False, description="Run the prompt through the chain of every declared loop, in order.")
    concurrency: ConcurrencyPolicy = Field(
        ConcurrencyPolicy.Forbid,
        description="When a run is due while the last one still runs: Forbid (skip it), Allow (run both) "
                    "or Replace (cancel the running one).")
    starting_deadline: int | None = Field(
        300, ge=1, description="Seconds after its time a missed run may still start (e.g. the agent was down); "
                               "later, it is recorded as skipped. null: always run it once.")
    timeout: int = Field(600, ge=1, le=86400, description="Seconds a run may take before it is stopped (timed_out).")
    suspend: bool = Field(False, description="Set true to pause the entry (it can still be run by hand).")
    enabled: bool = Field(True, description="Set false to pause the entry (the same as suspend: true).")
    history_limit: int = Field(20, ge=1, le=1000, description="Runs of this entry kept in its history.")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not DNS_LABEL.match(value) or len(value) > 63:
            raise ValueError(
                f"{value!r} is not a DNS-1123 label (lowercase letters, digits and '-', at most 63)"
            )
        return value

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        return validate_cron(value)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        return validate_timezone(value)

    @model_validator(mode="after")
    def _loop_or_chain(self) -> CronSpec:
        if self.chain and self.loop is not None:
            raise ValueError("give either loop or chain: true, not both")
        return self

    @property
    def paused(self) -> bool:
        return self.suspend or not self.enabled


Name = Annotated[str, Field(description="The agent's name (DNS-1123 label, at most 63 characters).")]


class AgentSpec(_Model):
    """The Agentfile body (everything but ``name``): the Agent resource's ``spec``."""

    version: str = Field("0.1.0", min_length=1, description="Your version of this agent.")
    runtime: RuntimeSpec = Field(default_factory=RuntimeSpec)
    model: ModelSpec
    identity: IdentitySpec = Field(default_factory=IdentitySpec)
    memory: MemorySpec = Field(default_factory=MemorySpec)
    tools: list[str] = Field(
        default_factory=list,
        description="Tools offered to the model: built-in names and names from custom_tools.",
    )
    custom_tools: list[CustomToolSpec] = Field(
        default_factory=list, description="Tools from `den.tools` entry points in the agent's image."
    )
    checks: list[CheckSpec] = Field(default_factory=list)
    loops: list[LoopSpec] = Field(default_factory=list)
    cron: list[CronSpec] = Field(default_factory=list)
    desiredState: DesiredState = Field(  # noqa: N815 (Kubernetes field name)
        "running", description="running or stopped (`den down` sets stopped)."
    )

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, value: Any) -> Any:
        if isinstance(value, float) or type(value).__name__ in ("date", "datetime"):
            raise ValueError(
                f"version was read as a {type(value).__name__}, not text; quote it "
                "(e.g. version: \"1.10\") so it stays exactly as written"
            )
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value

    @model_validator(mode="after")
    def _cross_field(self) -> AgentSpec:
        custom = {t.name for t in self.custom_tools}
        known = set(BUILTIN_TOOLS) | custom
        for index, tool in enumerate(self.tools):
            if tool not in known:
                raise _located(("tools", index), unknown_tool_message(tool, sorted(known)))
        for index, tool in enumerate(self.tools):
            if tool in self.tools[:index]:
                raise _located(("tools", index), f"tool {tool!r} is listed twice")
        _check_unique(self.custom_tools, "name", "custom tool", "custom_tools")
        _check_unique(self.checks, "name", "check name", "checks")
        _check_unique(self.loops, "type", "loop type", "loops")
        _check_unique(self.cron, "name", "cron name", "cron")
        listed = set(self.tools)
        for li, loop in enumerate(self.loops):
            for ti, tool in enumerate(loop.tools):
                if tool not in listed:
                    raise _located(
                        ("loops", li, "tools", ti),
                        f"tool {tool!r} is not in the agent's tools {sorted(listed)}",
                    )
        if self.memory.backend == MemoryBackend.postgres.value and not self.runtime.env.get(MEMORY_DSN_ENV):
            raise _located(
                ("memory", "backend"),
                f"postgres needs runtime.env.{MEMORY_DSN_ENV}: a postgresql:// URL of a server with pgvector, "
                f"e.g. {MEMORY_DSN_ENV}: ${{PG_DSN}}",
            )
        loop_types = {loop.type for loop in self.loops}
        for ci, entry in enumerate(self.cron):
            if entry.loop is not None and entry.loop not in loop_types:
                raise _located(
                    ("cron", ci, "loop"),
                    f"loop {entry.loop!r} is not declared under loops {sorted(loop_types)}",
                )
            if entry.chain and not self.loops:
                raise _located(("cron", ci, "chain"), "chain: true needs loops declared under loops")
        return self


DesiredState = Literal["running", "stopped"]
AgentSpec.model_rebuild()


class LocatedError(ValueError):
    """A cross-field error that knows which nested field it belongs to."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc


def _located(loc: tuple[str | int, ...], message: str) -> LocatedError:
    return LocatedError(loc, message)


def _check_unique(items: list[Any], attr: str, what: str, field: str) -> None:
    seen: set[Any] = set()
    for index, item in enumerate(items):
        key = getattr(item, attr)
        if key in seen:
            raise _located((field, index, attr), f"duplicate {what} {key!r}")
        seen.add(key)


def unknown_tool_message(tool: str, known: list[str]) -> str:
    from den.api.suggest import did_you_mean

    hint = did_you_mean(tool, known).removeprefix("; ")
    suggestion = f" ({hint})" if hint else ""
    return (
        f"unknown tool {tool!r}{suggestion}; built-in tools are "
        + ", ".join(BUILTIN_TOOLS)
        + " (declare others under custom_tools)"
    )


class Agentfile(AgentSpec):
    """The file a person writes: ``name`` plus the spec, optionally with metadata."""

    name: Name
    namespace: str = Field("default", description="Namespace of the Agent resource.")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels of the Agent resource.")
    annotations: dict[str, str] = Field(
        default_factory=dict, description="Annotations of the Agent resource."
    )

    @field_validator("name", "namespace")
    @classmethod
    def _dns_label(cls, value: str) -> str:
        return validate_dns_label(value)

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        return validate_labels(value)


_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")


def validate_labels(labels: dict[str, str]) -> dict[str, str]:
    """Kubernetes label syntax: ``[prefix/]name`` keys, values of at most 63 characters."""
    for key, value in labels.items():
        prefix, _, name = key.rpartition("/")
        if not name or len(name) > 63 or not _LABEL_NAME.match(name) or len(prefix) > 253:
            raise ValueError(f"{key!r} is not a valid label key")
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            raise ValueError(
                f"label {key!r} has an invalid value {value!r} (at most 63 characters: "
                "letters, digits, '-', '_', '.')"
            )
    return labels


def validate_cron(value: str) -> str:
    """A five-field cron expression (or an alias like ``@daily``) croniter accepts, or ValueError
    saying what is expected. The one rule for Agentfile ``cron`` entries and the tasks an agent
    schedules itself."""
    from croniter import croniter

    example = "(e.g. '0 9 * * 1-5' or '@daily')"
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a cron expression {example}")
    text = value.strip()
    if not text.startswith("@") and len(text.split()) != 5:
        raise ValueError(f"{value!r} is not a valid cron expression: expected five fields "
                         f"(minute hour day-of-month month day-of-week) {example}")
    if not croniter.is_valid(text):
        raise ValueError(f"{value!r} is not a valid cron expression {example}")
    return text


def cron_digest(entries: list[CronSpec]) -> str:
    """A digest of the ``cron`` section: the runtime reports the one it runs, the reconciler
    delivers the manifest again when it differs from the Agentfile's."""
    import hashlib
    import json

    canonical = json.dumps([e.model_dump(mode="json") for e in entries], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def validate_timezone(value: str) -> str:
    """An IANA time zone name (``UTC``, ``Europe/Paris``), or ValueError."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        if not value or value.startswith("/") or ".." in value:
            raise ValueError
        ZoneInfo(value)
    except (ValueError, ZoneInfoNotFoundError):
        raise ValueError(f"{value!r} is not an IANA time zone (e.g. 'UTC', 'Europe/Paris', "
                         "'America/New_York')") from None
    return value


def validate_dns_label(value: str) -> str:
    if len(value) > 63:
        raise ValueError(f"must be at most 63 characters, got {len(value)}")
    if not DNS_LABEL.match(value):
        raise ValueError(
            f"{value!r} is not a DNS-1123 label (lowercase letters, digits and '-', "
            "starting and ending with a letter or digit)"
        )
    return value
