"""The shared planner with a backend that enforces runtime.network itself (Kubernetes)."""

from __future__ import annotations

from pathlib import Path

from den.api.loader import load_paths
from den.operator import names
from den.operator.plan import Observed, ObservedContainer, desired_container, make_plan

ROOT = Path(__file__).resolve().parents[2]


def hello():
    return load_paths([ROOT / "examples" / "hello" / "Agentfile"])[0].agent


def test_plan_with_policy_in_backend_makes_no_network_and_no_network_container() -> None:
    agent = hello()
    observed = Observed(image_id="den-runtime:latest", policy_in_backend=True)
    plan = make_plan(agent, observed, desired_container(agent, observed, 8800))
    assert str(plan) == ("CreateVolume volume:den-hello-home: not found\n"
                         "CreateContainer container:den-hello: not found\n"
                         "StartContainer container:den-hello: created")
    assert not plan.incomplete


def test_plan_with_policy_in_backend_converged_is_nothing_and_diverged_is_replaced() -> None:
    agent = hello()
    observed = Observed(image_id="den-runtime:latest", policy_in_backend=True, volume_exists=True)
    desired = desired_container(agent, observed, 8800)
    running = ObservedContainer(id="default/den-hello", name="den-hello", running=True, status="running",
                                labels={names.LABEL_CONFIG_HASH: desired.config_hash}, host_port=8800)
    converged = Observed(**{**observed.__dict__, "containers": (running,)})
    assert str(make_plan(agent, converged, desired)) == "nothing to do"
    stale = ObservedContainer(**{**running.__dict__, "labels": {names.LABEL_CONFIG_HASH: "old"}})
    diverged = Observed(**{**observed.__dict__, "containers": (stale,)})
    assert str(make_plan(agent, diverged, desired)) == (
        "RemoveContainer container:den-hello#default/den-: config diverged\n"
        "CreateContainer container:den-hello: config diverged\n"
        "StartContainer container:den-hello: created")
