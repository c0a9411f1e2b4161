"""The model gateway as a system component: its config files and its plan (no Docker)."""

from __future__ import annotations

import hashlib
import json
import os

from den.api.agentfile import AgentSpec
from den.api.contract import GATEWAY_TOKEN_ENV, GATEWAY_URL_ENV, TOKEN_ENV
from den.api.resource import Agent, ObjectMeta
from den.operator import gateway, names
from den.operator.network import Layout
from den.operator.plan import ObservedContainer, ObservedGateway, make_gateway_plan
from den.operator.secrets import LocalCredentials, capture_env, gateway_token_path, save_credential


def make_agent(name: str = "scout", **runtime) -> Agent:
    spec = {"model": {"provider": "openai", "name": "gpt-4o-mini", "temperature": 0.2}, "runtime": runtime}
    return Agent(metadata=ObjectMeta(name=name), spec=AgentSpec.model_validate(spec))


def test_the_gateway_config_holds_token_hashes_settings_budgets_and_keys(den_home) -> None:
    save_credential("openai", "sk-from-auth")
    scout = make_agent(budget={"tokens_per_day": 1000})
    capture_env(scout, {"OPENAI_API_KEY": "sk-from-env", "UNRELATED": "x"})
    credentials = LocalCredentials(environ={})
    assert gateway.write_config([scout], credentials)
    folder = names.gateway_dir()
    config = json.loads((folder / "agents.json").read_text())
    keys = json.loads((folder / "keys.json").read_text())
    token = gateway_token_path(scout).read_text().strip()
    [entry] = config["agents"].items()
    assert entry[0] == hashlib.sha256(token.encode()).hexdigest() and token not in json.dumps(config)
    assert entry[1]["model"]["temperature"] == 0.2 and entry[1]["budget"]["tokens_per_day"] == 1000
    assert keys == {"OPENAI_API_KEY": "sk-from-env"}  # den up's environment wins over den auth
    for file in folder.iterdir():
        assert oct(file.stat().st_mode & 0o777) == "0o600", file
    assert not gateway.write_config([scout], credentials)  # unchanged: nothing rewritten


def test_an_agent_gets_its_gateway_url_and_token_and_never_a_provider_key(den_home) -> None:
    save_credential("openai", "sk-from-auth")
    scout = make_agent(env={"OPENAI_API_KEY": "${OPENAI_API_KEY}", "SEARCH": "on"})
    values = dict(LocalCredentials(environ={"OPENAI_API_KEY": "sk-op"}).secrets_for(scout).values)
    assert "OPENAI_API_KEY" not in values and not any(v.startswith("sk-") for v in values.values())
    assert values["SEARCH"] == "on" and values[GATEWAY_URL_ENV] == "http://den-gateway:8900/v1"
    assert values[GATEWAY_TOKEN_ENV].startswith("dengw_") and values[TOKEN_ENV].startswith("den_")


def test_two_workers_asking_for_a_token_at_once_get_the_same_one(den_home) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from den.operator.secrets import ensure_token

    scout = make_agent()
    with ThreadPoolExecutor(8) as pool:
        tokens = set(pool.map(lambda _: ensure_token(scout, kind="gateway"), range(32)))
    assert len(tokens) == 1 and not list(names.tokens_dir().glob("*.tmp"))


LAYOUT = Layout("172.29.0.0/16")


def desired(observed: ObservedGateway):
    return gateway.desired_gateway(observed)


def test_the_gateway_plan_creates_the_network_first_then_volume_and_container_at_its_address() -> None:
    observed = ObservedGateway(image_id="sha256:gw")
    plan = make_gateway_plan(observed, desired(observed))
    assert str(plan) == "CreateNetwork network:den: not found" and plan.incomplete
    observed = ObservedGateway(image_id="sha256:gw", network_exists=True, layout=LAYOUT)
    assert desired(observed).address == "172.29.0.2"
    assert str(make_gateway_plan(observed, desired(observed))) == (
        "CreateVolume volume:den-gateway-data: not found\n"
        "CreateContainer container:den-gateway: not found\n"
        "StartContainer container:den-gateway: created"
    )


def test_a_converged_gateway_needs_nothing_and_a_new_image_rolls_it() -> None:
    observed = ObservedGateway(image_id="sha256:gw", volume_exists=True, network_exists=True, layout=LAYOUT)
    want = desired(observed)
    running = ObservedContainer(id="g" * 64, name="den-gateway", running=True, status="running",
                                labels={names.LABEL_CONFIG_HASH: want.config_hash}, host_port=None)
    converged = ObservedGateway(containers=(running,), image_id="sha256:gw", volume_exists=True,
                                network_exists=True, layout=LAYOUT)
    assert str(make_gateway_plan(converged, want)) == "nothing to do"
    rebuilt = ObservedGateway(containers=(running,), image_id="sha256:new", volume_exists=True,
                              network_exists=True, layout=LAYOUT)
    assert "RemoveContainer container:den-gateway#gggggggggggg: config diverged" in str(
        make_gateway_plan(rebuilt, desired(rebuilt)))


def test_a_missing_gateway_image_stalls() -> None:
    observed = ObservedGateway()
    assert str(make_gateway_plan(observed, desired(observed))).startswith(
        "stalled: ImageMissing: image den-gateway:latest not found")


def test_as_root_the_config_is_given_to_the_gateway_user() -> None:
    user, owner = gateway.container_user()
    if os.geteuid() == 0:
        assert user == "10001:10001" and owner == (10001, 10001)
    else:
        assert user == f"{os.getuid()}:{os.getgid()}" and owner is None
