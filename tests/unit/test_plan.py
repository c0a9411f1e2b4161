"""The planner is pure: desired + observed -> a plan whose text reads like a spec."""

from __future__ import annotations

from den.api.agentfile import AgentSpec
from den.api.resource import Agent, AgentStatus, ObjectMeta
from den.operator.network import Layout
from den.operator.plan import (
    Observed,
    ObservedContainer,
    choose_port,
    config_hash,
    desired_container,
    make_plan,
)

LAYOUT = Layout("172.29.0.0/16")
ADDRESS = "172.29.1.1"
BASE = {"image_id": "sha256:img", "layout": LAYOUT, "net_image_id": "sha256:egress"}


def agent(desired_state: str = "running", temperature: float = 0.5, deleting: bool = False,
          network: str = "filtered", allow: tuple[str, ...] = ()) -> Agent:
    return Agent(
        metadata=ObjectMeta(name="scout", generation=1,
                            deletionTimestamp="2026-01-01T00:00:00Z" if deleting else None),
        spec=AgentSpec.model_validate(
            {"model": {"provider": "openai", "name": "m", "temperature": temperature},
             "runtime": {"network": network, "allow": list(allow)},
             "desiredState": desired_state}
        ),
    )


def observed(*containers: ObservedContainer, net: ObservedContainer | None = None, **fields) -> Observed:
    return Observed(containers=containers, net_containers=(net,) if net else (), **{**BASE, **fields})


def net_of(a: Agent, *, running: bool = True, id_: str = "n1" * 32, image: str = "sha256:img") -> ObservedContainer:
    desired = desired_container(a, Observed(**{**BASE, "image_id": image}), 8800, address=ADDRESS).net
    return ObservedContainer(id=id_, name="den-scout-net", running=running, status="running" if running else "exited",
                             labels=desired.labels, host_port=8800)


def container(a: Agent, *, running: bool = True, image: str = "sha256:img", id_: str = "c1" * 32) -> ObservedContainer:
    desired = desired_container(a, Observed(**{**BASE, "image_id": image}), 8800, address=ADDRESS)
    return ObservedContainer(
        id=id_, name="den-scout", running=running, status="running" if running else "exited",
        labels={"den.dev/config-hash": desired.config_hash}, host_port=None,
    )


def plan_text(a: Agent, seen: Observed, destroy: bool = False) -> str:
    return str(make_plan(a, seen, desired_container(a, seen, 8800, address=ADDRESS), destroy=destroy))


def test_plan_for_a_new_agent_creates_volume_network_container_then_the_agent() -> None:
    assert plan_text(agent(), observed()) == (
        "CreateVolume volume:den-scout-home: not found\n"
        "CreateContainer container:den-scout-net: not found\n"
        "StartContainer container:den-scout-net: created\n"
        "CreateContainer container:den-scout: network container not found\n"
        "StartContainer container:den-scout: created"
    )


def test_plan_without_dens_network_makes_it_first_and_nothing_else() -> None:
    plan = make_plan(agent(), Observed(image_id="sha256:img", network_exists=False),
                     desired_container(agent(), Observed(image_id="sha256:img"), 8800))
    assert str(plan) == "CreateNetwork network:den: not found"
    assert plan.incomplete


def test_plan_replaces_a_network_of_dens_name_made_without_its_subnet() -> None:
    seen = Observed(image_id="sha256:img", network_stale=True)
    assert plan_text(agent(), seen) == (
        "RemoveNetwork network:den: made without Den's subnet (an earlier Den): replaced\n"
        "CreateNetwork network:den: replaced with Den's subnet"
    )


def test_plan_for_a_converged_agent_is_empty() -> None:
    a = agent()
    assert plan_text(a, observed(container(a), net=net_of(a), volume_exists=True)) == "nothing to do"


def test_plan_container_diverged_is_recreated_in_the_same_network_container() -> None:
    old = agent(temperature=0.5)
    new = agent(temperature=0.9)
    assert plan_text(new, observed(container(old), net=net_of(new), volume_exists=True)) == (
        "RemoveContainer container:den-scout#c1c1c1c1c1c1: config diverged\n"
        "CreateContainer container:den-scout: config diverged\n"
        "StartContainer container:den-scout: created"
    )


def test_plan_a_policy_change_replaces_both_containers_and_keeps_the_volume() -> None:
    old = agent(network="none")
    new = agent(network="filtered", allow=("example.com",))
    assert plan_text(new, observed(container(old), net=net_of(old), volume_exists=True)) == (
        "RemoveContainer container:den-scout#c1c1c1c1c1c1: network container config diverged\n"
        "RemoveContainer container:den-scout-net#n1n1n1n1n1n1: config diverged\n"
        "CreateContainer container:den-scout-net: config diverged\n"
        "StartContainer container:den-scout-net: created\n"
        "CreateContainer container:den-scout: network container config diverged\n"
        "StartContainer container:den-scout: created"
    )


def test_plan_a_removed_network_container_is_recreated_and_the_agent_rejoins() -> None:
    a = agent()
    text = plan_text(a, observed(container(a), volume_exists=True))
    assert text.splitlines()[0] == "RemoveContainer container:den-scout#c1c1c1c1c1c1: network container not found"
    assert text.splitlines()[-2:] == ["CreateContainer container:den-scout: network container not found",
                                      "StartContainer container:den-scout: created"]


def test_plan_a_rebuilt_image_recreates_the_container() -> None:
    a = agent()
    seen = observed(container(a, image="sha256:old"), net=net_of(a), volume_exists=True, image_id="sha256:new")
    assert "RemoveContainer container:den-scout#c1c1c1c1c1c1: config diverged" in plan_text(a, seen)


def test_plan_a_stopped_container_is_started() -> None:
    a = agent()
    seen = observed(container(a, running=False), net=net_of(a), volume_exists=True)
    assert plan_text(a, seen) == "StartContainer container:den-scout: container is exited"


def test_plan_desired_stopped_removes_both_containers_and_keeps_the_volume() -> None:
    a = agent(desired_state="stopped")
    seen = observed(container(agent()), net=net_of(agent()), volume_exists=True)
    assert plan_text(a, seen) == (
        "RemoveContainer container:den-scout#c1c1c1c1c1c1: desiredState is stopped\n"
        "RemoveContainer container:den-scout-net#n1n1n1n1n1n1: desiredState is stopped"
    )


def test_plan_duplicates_are_removed_keeping_the_running_one() -> None:
    a = agent()
    dup = container(a, running=False, id_="d2" * 32)
    seen = observed(dup, container(a), net=net_of(a), volume_exists=True)
    assert plan_text(a, seen) == "RemoveContainer container:den-scout#d2d2d2d2d2d2: duplicate container"


def test_plan_delete_keeps_the_volume_unless_destroying() -> None:
    a = agent(deleting=True)
    seen = observed(container(a), volume_exists=True)
    assert plan_text(a, seen) == "RemoveContainer container:den-scout#c1c1c1c1c1c1: agent is being deleted"
    assert plan_text(a, seen, destroy=True).splitlines()[-1] == (
        "RemoveVolume volume:den-scout-home: destroy removes the agent's home and memory"
    )


def test_plan_refuses_to_take_over_a_foreign_container() -> None:
    assert plan_text(agent(), observed(foreign_container=True)).startswith(
        "stalled: NameConflict: a container named den-scout exists and Den does not own it"
    )


def test_plan_without_the_image_stalls_instead_of_creating() -> None:
    assert plan_text(agent(), observed(image_id=None)) == (
        "stalled: ImageMissing: image den-runtime:latest not found: build it with `make image` "
        "(hack/build-image.sh)"
    )
    assert plan_text(agent(), observed(net_image_id=None)).startswith(
        "stalled: ImageMissing: image den-egress:latest (network containers and the egress proxy) not found")


def test_plan_a_converged_agent_needs_no_image_to_keep_running() -> None:
    a = agent()
    seen = observed(container(a, image="den-runtime:latest"), net=net_of(a, image="den-runtime:latest"),
                    volume_exists=True, image_id=None)
    assert plan_text(a, seen) == "nothing to do"


def test_the_agent_joins_its_network_container_and_filtered_agents_get_the_proxy() -> None:
    desired = desired_container(agent(allow=("example.com",)), observed(), 8800, address=ADDRESS)
    assert desired.docker_network == "container:den-scout-net"
    assert desired.environment["HTTPS_PROXY"] == "http://den-egress:3128"
    assert "den-gateway" in desired.environment["NO_PROXY"]
    assert desired.net.labels["den.dev/allow"] == "example.com"
    assert desired.net.hosts == {"den-gateway": "172.29.0.2", "den-egress": "172.29.0.3"}
    none = desired_container(agent(network="none"), observed(), 8800, address=ADDRESS)
    assert none.environment == {} and "3128" not in none.net.ruleset


def test_ports_are_chosen_from_the_snapshot() -> None:
    a = agent()
    assert choose_port(a, Observed(used_ports=frozenset({8800, 8801}))) == 8802
    assert choose_port(a, Observed(used_ports=frozenset({8800})), frozenset({8801})) == 8802
    mine = Observed(net_containers=(net_of(a),), used_ports=frozenset({8801}))
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
        labels=container(a).labels, host_port=None, restart_count=3,
    )
    assert plan_text(a, observed(restarting, net=net_of(a), volume_exists=True)) == "nothing to do"


def test_an_agent_and_its_network_container_name_their_component_whatever_their_image_says() -> None:
    """Containers inherit their image's labels: an agent built FROM den-egress would otherwise
    carry den.dev/component=egress and be taken for the egress proxy."""
    desired = desired_container(agent(), observed(), 8800, address=ADDRESS)
    assert desired.labels["den.dev/component"] == "agent"
    assert desired.net.labels["den.dev/component"] == "net"
    assert {"app.kubernetes.io/managed-by": "den"}.items() <= desired.labels.items()
