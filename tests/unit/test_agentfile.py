"""The Agentfile models, the YAML loader and the Agentfile <-> Agent conversion."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from den.api.agentfile import BUILTIN_TOOLS, Agentfile, parse_memory_mb
from den.api.errors import InvalidAgentfile, Problem
from den.api.loader import YamlLoader, dump_yaml, load_paths, load_text
from den.api.resource import Agent, agentfile_document, to_agent, to_agentfile

ROOT = Path(__file__).resolve().parents[2]
COMPLETE_EXAMPLE = ROOT / "examples" / "research-analyst" / "Agentfile"
BAD = ROOT / "tests" / "fixtures" / "bad"
BAD_FILES = sorted(BAD.iterdir())

#: Expectations of fixtures that cannot carry an ``# expect:`` line.
EXPECTED_WITHOUT_COMMENT = {
    "empty.yaml": ("", "file is empty"),
}

MINIMAL = """\
name: helper
model:
  provider: openai
  name: gpt-4o-mini
"""


def load_one(text: str) -> Agent:
    loaded, problems = load_text(text, "Agentfile")
    assert not problems, "\n".join(str(p) for p in problems)
    (item,) = loaded
    return item.agent


def problems_of(text: str) -> list[Problem]:
    loaded, problems = load_text(text, "Agentfile")
    assert not loaded
    return problems


def expectation(fixture: Path) -> tuple[str, str]:
    """``(field path, message substring)`` from the fixture's ``# expect:`` line."""
    first_line = fixture.read_text(encoding="utf-8").partition("\n")[0]
    if first_line.startswith("# expect:"):
        path, _, substring = first_line.removeprefix("# expect:").partition("|")
        return path.strip(), substring.strip()
    assert fixture.name in EXPECTED_WITHOUT_COMMENT, f"{fixture.name} has no '# expect:' line"
    return EXPECTED_WITHOUT_COMMENT[fixture.name]


# --- the complete example and the defaults ---------------------------------


def test_the_complete_example_loads_as_a_full_agent_resource() -> None:
    (item,) = load_paths([COMPLETE_EXAMPLE])
    agent = item.agent
    assert (agent.apiVersion, agent.kind) == ("den.dev/v1alpha1", "Agent")
    assert (agent.metadata.name, agent.metadata.namespace) == ("research-analyst", "default")
    assert item.line == 2
    spec = agent.spec
    assert spec.version == "1.0.0"
    assert (spec.runtime.memory, spec.runtime.cpu, spec.runtime.network) == (1024, 1.5, "filtered")
    assert spec.runtime.allow == ["api.openai.com", "*.wikipedia.org", "arxiv.org"]
    assert spec.runtime.env["OPENAI_API_KEY"] == "${OPENAI_API_KEY}"
    assert (spec.model.provider, spec.model.name, spec.model.temperature) == (
        "openai",
        "gpt-4o",
        0.3,
    )
    assert spec.model.base_url is None
    assert spec.identity.system_prompt.startswith("You are a meticulous research analyst.")
    assert spec.identity.personality.verbosity == "detailed"
    assert spec.memory.max_context_memories == 8
    assert len(spec.tools) == 10 and "shell_exec" not in spec.tools
    assert [(c.name, c.on, c.kind) for c in spec.checks] == [
        ("cites-sources", "before_respond", "llm"),
        ("no-speculation", "before_respond", "llm"),
    ]
    assert [(loop.type, loop.max_iterations) for loop in spec.loops] == [
        ("research", 5),
        ("plan", 3),
        ("execute", 10),
        ("verify", 2),
    ]
    assert [(c.name, c.schedule, c.loop) for c in spec.cron] == [
        ("morning-briefing", "0 8 * * 1-5", "research"),
        ("weekly-digest", "0 17 * * fri", None),
    ]
    assert spec.desiredState == "running"
    manifest = agent.manifest()
    assert list(manifest) == ["apiVersion", "kind", "metadata", "spec"]
    assert manifest["spec"]["checks"][0]["on"] == "before_respond"


def test_an_agentfile_with_only_name_and_model_gets_the_documented_defaults() -> None:
    spec = load_one(MINIMAL).spec
    assert spec.version == "0.1.0"
    assert spec.runtime.model_dump() == {
        "base": "den-runtime:latest",
        "memory": 512,
        "cpu": 1.0,
        "network": "filtered",
        "allow": [],
        "env": {},
        "budget": {"usd_per_day": None, "tokens_per_day": None},
        "max_tasks": 10,
        "task_min_interval": 300,
        "max_request_bytes": None,
    }
    assert spec.model.model_dump() == {
        "provider": "openai",
        "name": "gpt-4o-mini",
        "temperature": 0.7,
        "max_tokens": 4096,
        "base_url": None,
        "context_window": None,
    }
    assert spec.identity.system_prompt == "You are a helpful assistant."
    assert (spec.identity.personality.tone, spec.identity.personality.verbosity) == (
        "neutral",
        "balanced",
    )
    assert spec.memory.model_dump() == {
        "backend": "sqlite",
        "semantic_recall": True,
        "fact_extraction": True,
        "max_context_memories": 10,
        "embedding_model": "wordllama",
    }
    assert (spec.tools, spec.custom_tools, spec.checks, spec.loops, spec.cron) == (
        [],
        [],
        [],
        [],
        [],
    )
    assert spec.desiredState == "running"


def test_defaults_of_list_entries_are_filled_in() -> None:
    spec = load_one(
        MINIMAL
        + "checks:\n  - {name: short, description: Short answers.}\n"
        + "loops:\n  - type: plan\n"
        + "cron:\n  - {name: daily, schedule: '0 9 * * *', prompt: Hello.}\n"
    ).spec
    check, loop, cron = spec.checks[0], spec.loops[0], spec.cron[0]
    assert (check.on, check.kind, check.pattern, check.max_retries) == (
        "before_respond",
        "llm",
        None,
        2,
    )
    assert (loop.max_iterations, loop.tools, loop.criteria) == (5, [], [])
    assert (cron.loop, cron.enabled) == (None, True)


# --- memory sizes -----------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "megabytes"),
    [
        ("512m", 512),
        ("2g", 2048),
        (1024, 1024),
        ("1.5G", 1536),
        ("256Mi", 256),
        ("1Gi", 1024),
        ("2gb", 2048),
        ("0.5g", 512),
        ("16m", 16),
        ("16384k", 16),
        ("16777216b", 16),
        ("1t", 1024 * 1024),
        (" 64 m ", 64),
        (2048.0, 2048),
    ],
)
def test_memory_sizes_are_read_as_megabytes(written: str | int, megabytes: int) -> None:
    assert parse_memory_mb(written) == megabytes
    memory = yaml.safe_dump({"memory": written}, default_flow_style=True).strip()
    assert load_one(MINIMAL + f"runtime: {memory}\n").spec.runtime.memory == megabytes


@pytest.mark.parametrize(
    "written", ["lots", "5 parsecs", "8m", 15, 0, -512, "1e3", "", "m", 512.5, True]
)
def test_memory_that_is_not_a_size_of_at_least_16_mb_is_refused(written: object) -> None:
    with pytest.raises(ValueError):
        parse_memory_mb(written)


# --- bad Agentfiles ---------------------------------------------------------


def test_there_are_at_least_thirty_bad_fixtures() -> None:
    assert len(BAD_FILES) >= 30


@pytest.mark.parametrize("fixture", BAD_FILES, ids=lambda p: p.name)
def test_each_bad_fixture_fails_with_its_expected_problem(fixture: Path) -> None:
    path, substring = expectation(fixture)
    with pytest.raises(InvalidAgentfile) as caught:
        load_paths([fixture])
    problems = caught.value.problems
    matching = [p for p in problems if p.path == path and substring in p.message]
    assert matching, f"expected {path!r}: ...{substring}..., got:\n{caught.value.message}"
    assert all(p.source == str(fixture) for p in problems)
    if path:
        lines = fixture.read_text(encoding="utf-8").splitlines()
        for problem in matching:
            assert problem.line is not None, str(problem)
            assert _line_shows(lines[problem.line - 1], path, problem.message), (
                f"line {problem.line} ({lines[problem.line - 1]!r}) does not hold {path}"
            )


def _line_shows(line: str, path: str, message: str) -> bool:
    """Whether ``line`` is where the field at ``path`` is written.

    A missing field is reported at its parent's key (or at the document's
    first line); a list entry at its ``-`` item or inline ``[...]`` list.
    """
    parts = re.findall(r"[^.\[\]]+|\[\d+\]", path)
    if message == "required field is missing":
        parts = parts[:-1]
        if not parts:
            return bool(line.strip()) and not line.lstrip().startswith("#")
    if parts[-1].startswith("["):
        return line.lstrip().startswith("- ") or "[" in line
    return re.search(rf"(^|[\s{{,]|- )[\"']?{re.escape(parts[-1])}[\"']?\s*:", line) is not None


def test_a_file_with_only_a_comment_has_no_documents() -> None:
    assert [str(p) for p in problems_of("# just a comment\n")] == [
        "Agentfile: no documents: expected an Agentfile (name, model, ...)"
    ]


@pytest.mark.parametrize("text", ["", "\n", "   \n\t\n"])
def test_an_empty_file_is_reported_as_empty(text: str) -> None:
    assert [str(p) for p in problems_of(text)] == [
        "Agentfile: file is empty: expected an Agentfile (name, model, ...)"
    ]


@pytest.mark.parametrize(
    ("text", "suggestion"),
    [
        ("name: a\nmodle:\n  provider: openai\n  name: gpt-4o\n", "did you mean 'model'?"),
        (MINIMAL + "identity:\n  sytem_prompt: Hi.\n", "did you mean 'system_prompt'?"),
        (MINIMAL + "tools: [web_serch]\n", "did you mean 'web_search'?"),
        (
            MINIMAL.replace("  name: gpt", "  temprature: 0.1\n  name: gpt"),
            "did you mean 'temperature'?",
        ),
        (
            MINIMAL + "loops:\n  - type: plan\n    max_iteration: 3\n",
            "did you mean 'max_iterations'?",
        ),
        (
            MINIMAL + "cron:\n  - {name: a, schedul: '* * * * *', prompt: p}\n",
            "did you mean 'schedule'?",
        ),
        (MINIMAL + "custom_tools: [{name: jira}]\ntools: [jiro]\n", "did you mean 'jira'?"),
    ],
)
def test_near_misses_suggest_the_intended_name(text: str, suggestion: str) -> None:
    assert any(suggestion in p.message for p in problems_of(text))


def test_far_misses_suggest_nothing() -> None:
    (problem,) = problems_of(MINIMAL + "colour: blue\n")
    assert (problem.path, problem.message) == ("colour", "unknown field 'colour'")


def test_every_problem_in_a_file_is_reported_at_once() -> None:
    problems = problems_of(
        "name: Bad_Name\nmodel:\n  provider: openai\n  name: gpt-4o\n  temperature: 3\n"
        "runtime:\n  memory: lots\n  network: bridge\n"
    )
    assert {(p.line, p.path) for p in problems} == {
        (1, "name"),
        (5, "model.temperature"),
        (7, "runtime.memory"),
        (8, "runtime.network"),
    }


# --- several documents, resources, YAML 1.2 --------------------------------


def test_a_file_with_several_documents_yields_one_agent_per_document() -> None:
    text = (
        MINIMAL
        + "---\n"
        + "# a comment-only document is skipped\n"
        + "---\n"
        + "name: scout\nmodel: {provider: ollama, name: llama3}\n"
        + "---\n"
        + "apiVersion: den.dev/v1alpha1\nkind: Agent\nmetadata: {name: keeper, namespace: ops}\n"
        + "spec:\n  model: {provider: anthropic, name: claude-3-5-sonnet}\n"
    )
    loaded, problems = load_text(text, "agents.yaml")
    assert not problems
    assert [(i.agent.key, i.line, i.source) for i in loaded] == [
        ("default/helper", 1, "agents.yaml"),
        ("default/scout", 8, "agents.yaml"),
        ("ops/keeper", 11, "agents.yaml"),
    ]


def test_problems_in_several_documents_are_reported_with_their_own_lines() -> None:
    text = MINIMAL + "---\nname: ok\nmodel: {provider: openai, name: x, max_tokens: 0}\n"
    loaded, problems = load_text(text, "agents.yaml")
    assert [a.agent.name for a in loaded] == ["helper"]
    assert [str(p) for p in problems] == [
        "agents.yaml:7: model.max_tokens: Input should be greater than 0"
    ]


def test_two_files_defining_the_same_agent_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(MINIMAL)
    (tmp_path / "b.yaml").write_text(MINIMAL.replace("gpt-4o-mini", "gpt-4o"))
    with pytest.raises(InvalidAgentfile) as caught:
        load_paths([tmp_path])
    (problem,) = caught.value.problems
    assert problem.path == "name"
    assert problem.message == f"agent 'default/helper' is also defined at {tmp_path / 'a.yaml'}:1"


def test_the_same_name_in_two_namespaces_is_two_agents() -> None:
    loaded, problems = load_text(MINIMAL + "---\n" + MINIMAL + "namespace: other\n")
    assert not problems
    assert [i.agent.key for i in loaded] == ["default/helper", "other/helper"]


def test_a_full_agent_resource_document_is_accepted() -> None:
    agent = load_one(
        """\
apiVersion: den.dev/v1alpha1
kind: Agent
metadata:
  name: helper
  namespace: team
  labels: {app.kubernetes.io/part-of: den}
  uid: 0b1c
  generation: 3
spec:
  model: {provider: openai, name: gpt-4o-mini}
  tools: [memo_write]
  checks:
    - name: polite
      description: The answer is polite.
      "on": before_respond
status:
  phase: Running
"""
    )
    assert agent.key == "team/helper"
    assert agent.metadata.labels == {"app.kubernetes.io/part-of": "den"}
    assert agent.metadata.generation == 3
    assert agent.status is not None and agent.status.phase == "Running"
    assert agent.spec.checks[0].on == "before_respond"
    as_agentfile = to_agentfile(agent)
    assert (as_agentfile.name, as_agentfile.namespace, as_agentfile.tools) == (
        "helper",
        "team",
        ["memo_write"],
    )


def test_the_on_key_of_a_check_is_a_string_not_a_boolean() -> None:
    text = (
        MINIMAL + "checks:\n  - name: polite\n    description: Be polite.\n    on: before_respond\n"
    )
    check = yaml.load(text, Loader=YamlLoader)["checks"][0]
    assert check == {"name": "polite", "description": "Be polite.", "on": "before_respond"}
    assert load_one(text).spec.checks[0].on == "before_respond"
    assert True in yaml.safe_load(text)["checks"][0], "YAML 1.1 reads on: as true"


@pytest.mark.parametrize(
    ("written", "read"),
    [
        ("yes", "yes"),
        ("no", "no"),
        ("on", "on"),
        ("off", "off"),
        ("true", "true"),
        ("False", "false"),
        ("8080", "8080"),
        ("0.5", "0.5"),
        ('"007"', "007"),
    ],
)
def test_env_values_keep_yaml_1_2_meaning(written: str, read: str) -> None:
    assert load_one(MINIMAL + f"runtime:\n  env:\n    VALUE: {written}\n").spec.runtime.env == {
        "VALUE": read
    }


def test_an_integer_version_is_read_as_a_string() -> None:
    assert load_one(MINIMAL + "version: 2\n").spec.version == "2"
    assert load_one(MINIMAL + 'version: "1.10"\n').spec.version == "1.10"


def test_a_version_read_as_a_decimal_number_is_refused_not_changed() -> None:
    """YAML reads 1.10 as the float 1.1: storing "1.1" would silently change it."""
    (problem,) = problems_of(MINIMAL + "version: 1.10\n")
    assert (problem.line, problem.path) == (5, "version")
    assert "quote it" in problem.message


def test_wildcard_domains_are_lowercased() -> None:
    spec = load_one(MINIMAL + "runtime:\n  allow: ['*.Example.COM', API.openai.com]\n").spec
    assert spec.runtime.allow == ["*.example.com", "api.openai.com"]


def test_custom_tools_can_be_listed_and_used_by_loops() -> None:
    spec = load_one(
        MINIMAL + "custom_tools: [{name: jira_lookup}]\ntools: [jira_lookup]\n"
        "loops:\n  - {type: research, tools: [jira_lookup]}\n"
    ).spec
    assert spec.tools == ["jira_lookup"] and spec.loops[0].tools == ["jira_lookup"]


def test_a_complex_yaml_key_is_a_problem_not_a_crash() -> None:
    (problem,) = problems_of(MINIMAL + "? [a, b]\n: c\n")
    assert (problem.path, problem.message) == ("", "invalid YAML: found unhashable key")


def test_an_invalid_label_in_an_agentfile_is_a_problem_not_a_crash() -> None:
    (problem,) = problems_of(MINIMAL + "labels:\n  'bad key!': x\n")
    assert (problem.line, problem.path) == (5, "labels")
    assert problem.message == "'bad key!' is not a valid label key"


@pytest.mark.parametrize("separator", ["\x85", "\u2028", "\u2029"])
def test_unicode_line_separators_survive_dump_and_load(separator: str) -> None:
    agentfile = Agentfile.model_validate(
        {
            "name": "a",
            "model": {"provider": "openai", "name": "x"},
            "identity": {"system_prompt": f"a{separator}b"},
        }
    )
    assert load_one(dump_yaml(agentfile_document(agentfile))) == to_agent(agentfile)


# --- lossless conversion, property-based -----------------------------------

SCHEDULES = [
    "0 9 * * 1-5",
    "*/15 * * * *",
    "0 0 1 * *",
    "30 17 * * fri",
    "0 8,12,18 * * *",
    "@daily",
]
DOMAINS = ["api.openai.com", "*.wikipedia.org", "arxiv.org", "example.com", "*.github.io"]
LOOP_TYPES = ["research", "plan", "execute", "verify"]

dns_labels = st.from_regex(r"\A[a-z]([-a-z0-9]{0,20}[a-z0-9])?\Z")
words = st.text(st.characters(exclude_categories=["Cs", "Cc"]), min_size=1, max_size=30)
prose = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=80)
custom_tool_names = st.from_regex(r"\A[a-z][a-z0-9_]{0,12}\Z").filter(
    lambda n: n not in BUILTIN_TOOLS
)
env_names = st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_]{0,15}\Z")
label_values = st.from_regex(r"\A([a-z0-9]([-a-z0-9_.]{0,20}[a-z0-9])?)?\Z")


@st.composite
def agentfiles(draw: st.DrawFn) -> Agentfile:
    """Valid Agentfiles over the whole schema, cross-field rules respected."""
    custom = draw(st.lists(custom_tool_names, unique=True, max_size=3))
    tools = draw(st.lists(st.sampled_from([*BUILTIN_TOOLS, *custom]), unique=True, max_size=8))
    loop_types = draw(st.lists(st.sampled_from(LOOP_TYPES), unique=True, max_size=4))
    loops = [
        {
            "type": loop_type,
            "max_iterations": draw(st.integers(1, 100)),
            "tools": draw(st.lists(st.sampled_from(tools), unique=True)) if tools else [],
            "criteria": draw(st.lists(words, max_size=2)),
        }
        for loop_type in loop_types
    ]
    cron = [
        {
            "name": name,
            "schedule": draw(st.sampled_from(SCHEDULES)),
            "prompt": draw(prose),
            "loop": draw(st.sampled_from([None, *loop_types])),
            "enabled": draw(st.booleans()),
        }
        for name in draw(st.lists(dns_labels, unique=True, max_size=3))
    ]
    checks = []
    for name in draw(st.lists(words, unique=True, max_size=3)):
        regex = draw(st.booleans())
        checks.append(
            {
                "name": name,
                "description": draw(prose),
                "kind": "regex" if regex else "llm",
                "pattern": draw(st.sampled_from(["^Summary", r"\d+", "(?i)sources?:"]))
                if regex
                else None,
                "max_retries": draw(st.integers(0, 10)),
            }
        )
    network = draw(st.sampled_from(["none", "filtered", "host"]))
    data = {
        "name": draw(dns_labels),
        "namespace": draw(dns_labels),
        "version": draw(st.sampled_from(["0.1.0", "1.0", "2", "2024-01-01", "v3"])),
        "labels": draw(st.dictionaries(dns_labels, label_values, max_size=3)),
        "annotations": draw(st.dictionaries(dns_labels, prose, max_size=2)),
        "desiredState": draw(st.sampled_from(["running", "stopped"])),
        "runtime": {
            "base": draw(st.sampled_from(["den-runtime:latest", "ghcr.io/acme/agent:1.2"])),
            "memory": draw(
                st.one_of(st.integers(16, 65536), st.sampled_from(["512m", "2g", "1.5G"]))
            ),
            "cpu": draw(st.floats(0.01, 64, allow_nan=False)),
            "network": network,
            "allow": draw(st.lists(st.sampled_from(DOMAINS), max_size=3, unique=True))
            if network == "filtered"
            else [],
            "env": draw(st.dictionaries(env_names, prose, max_size=3)),
        },
        "model": {
            "provider": draw(st.sampled_from(["openai", "anthropic", "ollama"])),
            "name": draw(words.filter(str.strip)),
            "temperature": draw(st.floats(0, 2, allow_nan=False)),
            "max_tokens": draw(st.integers(1, 200_000)),
            "base_url": draw(
                st.sampled_from([None, "http://localhost:11434/v1", "https://llm.example.com"])
            ),
        },
        "identity": {
            "system_prompt": draw(prose),
            "personality": {
                "tone": draw(words),
                "verbosity": draw(st.sampled_from(["concise", "balanced", "detailed"])),
            },
        },
        "memory": {
            "backend": "sqlite",  # postgres is refused until the memory work lands
            "semantic_recall": draw(st.booleans()),
            "fact_extraction": draw(st.booleans()),
            "max_context_memories": draw(st.integers(0, 50)),
        },
        "tools": tools,
        "custom_tools": [{"name": n, "description": draw(st.none() | prose)} for n in custom],
        "checks": checks,
        "loops": loops,
        "cron": cron,
    }
    return Agentfile.model_validate(data)


property_settings = settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@property_settings
@given(agentfiles())
def test_an_agentfile_survives_conversion_to_an_agent_and_back(agentfile: Agentfile) -> None:
    assert to_agentfile(to_agent(agentfile)) == agentfile


@property_settings
@given(agentfiles(), st.integers(1, 1000), dns_labels)
def test_an_agent_survives_conversion_to_an_agentfile_and_back(
    agentfile: Agentfile, generation: int, uid: str
) -> None:
    agent = to_agent(agentfile)
    agent.metadata.generation, agent.metadata.uid = generation, uid
    again = to_agent(to_agentfile(agent))
    assert again.spec == agent.spec
    assert again.metadata.model_dump(exclude={"generation", "uid"}) == agent.metadata.model_dump(
        exclude={"generation", "uid"}
    )


@property_settings
@given(agentfiles())
def test_an_agentfile_dumped_as_yaml_loads_as_the_same_agent(agentfile: Agentfile) -> None:
    text = dump_yaml(agentfile_document(agentfile))
    assert load_one(text) == to_agent(agentfile)


@property_settings
@given(agentfiles())
def test_an_agent_manifest_dumped_as_yaml_loads_as_the_same_agent(agentfile: Agentfile) -> None:
    agent = to_agent(agentfile)
    assert load_one(dump_yaml(agent.manifest())) == agent
