"""The declarative CLI as a user runs it: real `den` processes, a real state store."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from den import __version__
from tests.conftest import EXAMPLES, FIXTURES

EXAMPLE = EXAMPLES / "research-analyst" / "Agentfile"
BAD = sorted(p for p in (FIXTURES / "bad").iterdir() if p.is_file())


def write_agent(folder: Path, name: str, temperature: float = 0.5) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(
        f"name: {name}\nmodel:\n  provider: openai\n  name: gpt-4o-mini\n  temperature: {temperature}\n"
    )
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "absent"


def test_the_complete_example_validates_applies_and_reads_back_as_a_full_resource(den) -> None:
    assert den("validate", str(EXAMPLE)).code == 0
    applied = den("apply", "-f", str(EXAMPLE))
    assert applied.code == 0, applied.output
    assert "agent.den.dev/research-analyst created" in applied.stdout
    shown = den("get", "agent", "research-analyst", "-o", "yaml")
    assert shown.code == 0, shown.output
    resource = yaml.safe_load(shown.stdout)
    assert resource["apiVersion"] == "den.dev/v1alpha1" and resource["kind"] == "Agent"
    assert resource["metadata"]["name"] == "research-analyst"
    assert resource["metadata"]["generation"] == 1 and resource["metadata"]["uid"]
    assert resource["spec"]["model"] == {
        "provider": "openai", "name": "gpt-4o", "temperature": 0.3, "max_tokens": 4096,
    }
    assert resource["spec"]["runtime"]["memory"] == 1024
    assert resource["spec"]["checks"][0]["on"] == "before_respond"
    assert resource["spec"]["desiredState"] == "running"
    # what get prints is itself valid input
    assert den("validate", "-", input=shown.stdout).code == 0
    assert den("apply", "-f", "-", input=shown.stdout).stdout.strip().endswith("unchanged")


def test_applying_the_same_file_twice_changes_nothing(den, den_home: Path) -> None:
    den("apply", "-f", str(EXAMPLE))
    before = json.loads(den("get", "agent", "research-analyst", "-o", "json").stdout)["metadata"]
    second = den("apply", "-f", str(EXAMPLE))
    assert "unchanged" in second.stdout
    after = json.loads(den("get", "agent", "research-analyst", "-o", "json").stdout)["metadata"]
    assert (after["generation"], after["resourceVersion"]) == (before["generation"], before["resourceVersion"])


def test_changing_the_spec_bumps_generation(den, tmp_path: Path) -> None:
    path = write_agent(tmp_path / "agents", "scout", 0.5)
    den("apply", "-f", str(path))
    write_agent(tmp_path / "agents", "scout", 0.9)
    assert "configured" in den("apply", "-f", str(path)).stdout
    meta = json.loads(den("get", "agent", "scout", "-o", "json").stdout)["metadata"]
    assert meta["generation"] == 2


@pytest.mark.parametrize("bad", BAD, ids=[p.name for p in BAD])
def test_a_bad_agentfile_is_refused_with_its_field_and_stores_nothing(den, den_home: Path, bad: Path) -> None:
    den("apply", "-f", str(EXAMPLE))
    state = den_home / "state.db"
    before = digest(state)
    header = bad.read_text().splitlines()[0] if bad.read_text().strip() else ""
    expected_path = ""
    if header.startswith("# expect:"):
        expected_path = header.removeprefix("# expect:").split("|")[0].strip()
    for command in (["validate", str(bad)], ["apply", "-f", str(bad)]):
        result = den(*command)
        assert result.code == 1, result.output
        assert "Traceback" not in result.output
        assert str(bad) in result.stderr
        if expected_path:
            assert f": {expected_path}: " in result.stderr, result.stderr
    assert digest(state) == before


def test_there_are_at_least_thirty_bad_agentfiles() -> None:
    assert len(BAD) >= 30


def test_a_directory_apply_is_all_or_nothing(den, den_home: Path, tmp_path: Path) -> None:
    folder = tmp_path / "agents"
    for name in ("a", "b", "c"):
        write_agent(folder, name)
    (folder / "broken.yaml").write_text("name: d\nmodel: {provider: openai, name: x, temperature: 9}\n")
    result = den("apply", "-f", str(folder))
    assert result.code == 1 and "broken.yaml:2: model.temperature" in result.stderr
    assert not (den_home / "state.db").exists()
    (folder / "broken.yaml").unlink()
    assert den("apply", "-f", str(folder)).stdout.count("created") == 3


def test_prune_removes_exactly_the_agents_this_directory_created(den, tmp_path: Path) -> None:
    gitops = tmp_path / "gitops"
    for name in ("keep", "drop"):
        write_agent(gitops, name)
    den("apply", "-f", str(gitops))
    den("apply", "-f", str(write_agent(tmp_path / "elsewhere", "other")))
    den("apply", "-f", str(write_agent(tmp_path / "team-b", "neighbour")))
    (gitops / "drop.yaml").unlink()
    write_agent(gitops, "new")
    dry = den("apply", "-f", str(gitops), "--prune", "--dry-run")
    assert "agent.den.dev/drop pruned (dry run)" in dry.stdout
    assert "drop" in den("get", "agents").stdout
    result = den("apply", "-f", str(gitops), "--prune")
    assert result.code == 0, result.output
    assert "agent.den.dev/drop pruned" in result.stdout
    assert "agent.den.dev/new created" in result.stdout
    listed = json.loads(den("get", "agents", "-o", "json").stdout)
    assert sorted(i["metadata"]["name"] for i in listed["items"]) == ["keep", "neighbour", "new", "other"]


def test_prune_needs_a_directory(den, tmp_path: Path) -> None:
    result = den("apply", "-f", str(write_agent(tmp_path, "x")), "--prune")
    assert result.code == 1 and "--prune needs exactly one directory" in result.stderr


def test_get_delete_and_events(den) -> None:
    den("apply", "-f", str(EXAMPLE))
    table = den("get", "agents")
    assert "research-analyst" in table.stdout and "openai/gpt-4o" in table.stdout
    missing = den("get", "agent", "nope")
    assert missing.code == 3 and 'agent "nope" not found' in missing.stderr
    typo = den("get", "agnets")
    assert typo.code == 1 and "did you mean 'agents'" in typo.stderr
    assert den("delete", "agent", "research-analyst").stdout.strip() == "agent.den.dev/research-analyst deleted"
    assert "No agents found" in den("get", "agents").stderr
    assert den("events", "-o", "json").code == 0


def test_init_writes_a_valid_agentfile_and_refuses_to_overwrite(den, tmp_path: Path) -> None:
    made = den("init", "--name", "helper", "--model", "openai/gpt-4o-mini",
               "--system-prompt", "Be brief.", "--non-interactive")
    assert made.code == 0, made.output
    assert den("validate", "Agentfile").code == 0
    body = yaml.safe_load((tmp_path / "Agentfile").read_text())
    assert body["name"] == "helper" and body["identity"]["system_prompt"] == "Be brief."
    again = den("init", "--name", "other", "--non-interactive")
    assert again.code == 1 and "already exists" in again.stderr
    assert yaml.safe_load((tmp_path / "Agentfile").read_text())["name"] == "helper"
    assert den("init", "--name", "other", "--non-interactive", "--force").code == 0


def test_init_asks_questions_when_interactive(den, tmp_path: Path) -> None:
    answers = "asker\nollama/llama3\nYou answer questions.\nweb_search,file_read\n"
    result = den("init", input=answers)
    assert result.code == 0, result.output
    body = yaml.safe_load((tmp_path / "Agentfile").read_text())
    assert body["model"] == {"provider": "ollama", "name": "llama3"}
    assert body["tools"] == ["web_search", "file_read"]


def test_init_rejects_an_invalid_name_without_writing(den, tmp_path: Path) -> None:
    result = den("init", "--name", "Bad_Name", "--non-interactive")
    assert result.code == 1 and "name" in result.stderr
    assert not (tmp_path / "Agentfile").exists()


def test_user_errors_are_messages_and_debug_shows_the_traceback(den) -> None:
    plain = den("get", "agent", "ghost")
    assert "Traceback" not in plain.output
    debug = den("--debug", "get", "agent", "ghost")
    assert "Traceback" in debug.stderr and debug.code != 0


def test_examples_all_validate(den) -> None:
    agentfiles = sorted(EXAMPLES.rglob("Agentfile"))
    assert agentfiles
    for path in agentfiles:
        result = den("validate", str(path))
        assert result.code == 0, result.output


def test_help_shows_examples_for_every_command(den) -> None:
    for command in ("validate", "apply", "get", "delete", "events", "init"):
        result = den(command, "--help")
        assert result.code == 0 and "Example" in result.stdout, command


def test_the_installed_den_command_runs(den_home: Path) -> None:
    """The `den` console script pip installs next to this Python, not `python -m den`."""
    script = Path(sys.executable).parent / ("den.exe" if os.name == "nt" else "den")
    assert script.is_file(), f"no `den` console script at {script}: reinstall with `pip install -e .`"
    env = {**os.environ, "DEN_HOME": str(den_home), "NO_COLOR": "1"}
    version = subprocess.run([str(script), "--version"], capture_output=True, text=True, env=env, timeout=60)
    assert (version.returncode, version.stdout.strip()) == (0, f"den {__version__}"), version.stderr
    usage = subprocess.run([str(script), "--help"], capture_output=True, text=True, env=env, timeout=60)
    assert usage.returncode == 0 and usage.stdout.startswith("Usage: den "), usage.stderr


def test_with_no_operator_running_get_and_status_say_the_status_is_stale(den, den_home: Path) -> None:
    """A container removed while no operator runs must not go on showing Running: like a node
    whose kubelet stopped posting, the phase is Unknown and says since when nobody looked."""
    from den.api.resource import AgentStatus, Condition
    from den.operator.store import Store
    from tests.integration.test_store import make_agent

    with Store(den_home / "state.db") as store:
        store.apply_all([make_agent("scout")])
        store.update_status("scout", "default", AgentStatus(
            phase="Running", observedGeneration=1, endpoint="http://127.0.0.1:8800",
            conditions=[Condition(type="Ready", status="True", reason="Ready", message="answering")]))
        store.heartbeat()
    listed = den("get", "agents")
    assert listed.code == 0, listed.output
    row = next(line for line in listed.stdout.splitlines() if line.startswith("scout"))
    assert "Unknown (operator not running, last seen" in row and "Running" not in row
    manifest = json.loads(den("get", "agent", "scout", "-o", "json").stdout)
    ready = next(c for c in manifest["status"]["conditions"] if c["type"] == "Ready")
    assert manifest["status"]["phase"] == "Unknown"
    assert ready["status"] == "Unknown" and ready["reason"] == "OperatorNotRunning"
    assert "the last status seen was Running" in ready["message"]
    with Store(den_home / "state.db") as store:  # what is stored is not rewritten by a reader
        assert store.get("scout").status.phase == "Running"
