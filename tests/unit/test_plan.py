"""The planner is pure: desired + observed -> a plan whose text reads like a spec."""

from __future__ import annotations

from den.api.agentfile import AgentSpec
from den.api.resource import Agent, AgentStatus, ObjectMeta
from den.operator.plan import (
    Observed,
    ObservedContainer,
    choose_port,
    config_hash,
    desired_container,
    make_plan,
)


def agent(desired_state: str = "running", temperature: float = 0.5, deleting: bool = False) -> Agent:
    return Agent(
        metadata=ObjectMeta(name="scout", generation=1,
                            deletionTimestamp="2026-01-01T00:00:00Z" if deleting else None),
        spec=AgentSpec.model_validate(
            {"model": {"provider": "openai", "name": "m", "temperature": temperature},
             "desiredState": desired_state}
        ),
    )


def container(a: Agent, *, running: bool = True, image: str = "sha256:img", id_: str = "c1" * 32) -> ObservedContainer:
    return ObservedContainer(
        id=id_, name="den-scout", running=running, status="running" if running else "exited",
        labels={"den.dev/config-hash": config_hash(a, image)}, host_port=8800,
    )


def plan_text(a: Agent, observed: Observed, destroy: bool = False) -> str:
    return str(make_plan(a, observed, desired_container(a, observed, 8800), destroy=destroy))


def test_plan_for_a_new_agent_creates_volume_and_container() -> None:
    assert plan_text(agent(), Observed(image_id="sha256:img")) == (
        "CreateVolume volume:den-scout-home: not found\n"
        "CreateContainer container:den-scout: not found\n"
        "StartContainer container:den-scout: created"
    )


def test_plan_for_a_converged_agent_is_empty() -> None:
    a = agent()
    observed = Observed(containers=(container(a),), volume_exists=True, image_id="sha256:img")
    assert plan_text(a, observed) == "nothing to do"


def test_plan_container_diverged_is_recreated() -> None:
    old = agent(temperature=0.5)
    observed = Observed(containers=(container(old),), volume_exists=True, image_id="sha256:img")
    assert plan_text(agent(temperature=0.9), observed) == (
        "RemoveContainer container:den-scout#c1c1c1c1c1c1: config diverged\n"
        "CreateContainer container:den-scout: config diverged\n"
        "StartContainer container:den-scout: created"
    )


def test_plan_a_rebuilt_image_recreates_the_container() -> None:
    a = agent()
    observed = Observed(containers=(container(a, image="sha256:old"),), volume_exists=True, image_id="sha256:new")
    assert "RemoveContainer container:den-scout#c1c1c1c1c1c1: config diverged" in plan_text(a, observed)


def test_plan_a_stopped_container_is_started() -> None:
    a = agent()
    observed = Observed(containers=(container(a, running=False),), volume_exists=True, image_id="sha256:img")
    assert plan_text(a, observed) == "StartContainer container:den-scout: container is exited"


def test_plan_desired_stopped_removes_the_container_and_keeps_the_volume() -> None:
    a = agent(desired_state="stopped")
    observed = Observed(containers=(container(agent()),), volume_exists=True, image_id="sha256:img")
    assert plan_text(a, observed) == "RemoveContainer container:den-scout#c1c1c1c1c1c1: desiredState is stopped"


def test_plan_duplicates_are_removed_keeping_the_running_one() -> None:
    a = agent()
    dup = container(a, running=False, id_="d2" * 32)
    observed = Observed(containers=(dup, container(a)), volume_exists=True, image_id="sha256:img")
    assert plan_text(a, observed) == "RemoveContainer container:den-scout#d2d2d2d2d2d2: duplicate container"


def test_plan_delete_keeps_the_volume_unless_destroying() -> None:
    a = agent(deleting=True)
    observed = Observed(containers=(container(a),), volume_exists=True, image_id="sha256:img")
    assert plan_text(a, observed) == "RemoveContainer container:den-scout#c1c1c1c1c1c1: agent is being deleted"
    assert plan_text(a, observed, destroy=True).splitlines()[-1] == (
        "RemoveVolume volume:den-scout-home: destroy removes the agent's home and memory"
    )


def test_plan_refuses_to_take_over_a_foreign_container() -> None:
    assert plan_text(agent(), Observed(image_id="x", foreign_container=True)).startswith(
        "stalled: NameConflict: a container named den-scout exists and Den does not own it"
    )


def test_plan_without_the_image_stalls_instead_of_creating() -> None:
    assert plan_text(agent(), Observed(image_id=None)) == (
        "stalled: ImageMissing: image den-runtime:latest not found: build it with `make image` "
        "(hack/build-image.sh)"
    )


def test_plan_a_converged_agent_needs_no_image_to_keep_running() -> None:
    a = agent()
    observed = Observed(containers=(container(a, image="den-runtime:latest"),), volume_exists=True, image_id=None)
    assert plan_text(a, observed) == "nothing to do"


def test_ports_are_chosen_from_the_snapshot() -> None:
    a = agent()
    assert choose_port(a, Observed(used_ports=frozenset({8800, 8801}))) == 8802
    assert choose_port(a, Observed(used_ports=frozenset({8800})), frozenset({8801})) == 8802
    mine = Observed(containers=(container(a),), used_ports=frozenset({8801}))
    assert choose_port(a, mine) == 8800
    recorded = a.model_copy(update={"status": AgentStatus(port=8805)})
    assert choose_port(recorded, Observed(used_ports=frozenset({8800}))) == 8805
    assert choose_port(recorded, Observed(used_ports=frozenset({8805}))) == 8800


def test_config_hash_ignores_desired_state_but_not_the_spec() -> None:
    assert config_hash(agent("running"), "i") == config_hash(agent("stopped"), "i")
    assert config_hash(agent(temperature=0.1), "i") != config_hash(agent(temperature=0.2), "i")


def test_plan_a_restarting_container_is_left_to_the_restart_policy() -> None:
    a = agent()
    restarting = ObservedContainer(
        id="c1" * 32, name="den-scout", running=False, status="restarting",
        labels={"den.dev/config-hash": config_hash(a, "sha256:img")}, host_port=8800, restart_count=3,
    )
    observed = Observed(containers=(restarting,), volume_exists=True, image_id="sha256:img")
    assert plan_text(a, observed) == "nothing to do"
