"""An installation is a namespace on the engine: its own names, labels and objects."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from den.api.errors import DenError
from den.operator.names import Installation
from den.operator.network import Layout
from den.operator.plan import Observed, desired_container
from den.operator.store import Store
from tests.integration.test_store import make_agent

OTHER = Installation("7f3a2c")


def test_the_default_installation_keeps_dens_short_names() -> None:
    default = Installation()
    assert (default.container_name("hello"), default.net_container_name("hello"), default.volume_name("hello")) \
        == ("den-hello", "den-hello-net", "den-hello-home")
    assert (default.gateway, default.egress, default.gateway_volume, default.network) \
        == ("den-gateway", "den-egress", "den-gateway-data", "den")
    assert default.container_name("hello", "team") == "den-team-hello"


def test_another_installation_names_everything_after_its_id() -> None:
    assert (OTHER.container_name("hello"), OTHER.volume_name("hello"), OTHER.net_container_name("hello")) \
        == ("den-7f3a2c.hello", "den-7f3a2c.hello-home", "den-7f3a2c.hello-net")
    assert (OTHER.gateway, OTHER.egress, OTHER.gateway_volume, OTHER.network) \
        == ("den-7f3a2c.gateway", "den-7f3a2c.egress", "den-7f3a2c.gateway-data", "den-7f3a2c")


def _objects(installation: Installation, agent: str, namespace: str) -> set[str]:
    """Its names by Docker's kind (containers, volumes and networks are named apart)."""
    return {*(f"container:{n}" for n in (installation.container_name(agent, namespace), installation.gateway,
                                          installation.net_container_name(agent, namespace), installation.egress)),
            *(f"volume:{n}" for n in (installation.volume_name(agent, namespace), installation.gateway_volume)),
            f"network:{installation.network}"}


@pytest.mark.parametrize(("agent", "namespace"), [("hello", "default"), ("7f3a2c", "default"),
                                                  ("hello", "7f3a2c"), ("x", "7f3a2c")])
def test_no_name_of_one_installation_is_a_name_of_another(agent: str, namespace: str) -> None:
    default, third = Installation(), Installation("7f3a2c-x")
    for mine in (default, OTHER, third):
        for other in (default, OTHER, third):
            if other != mine:
                assert not _objects(mine, agent, namespace) & _objects(other, agent, namespace)


def test_an_installation_owns_only_its_own_labels_and_the_default_one_owns_unlabelled_objects() -> None:
    made_by_old_den = {"den.dev/agent": "hello", "app.kubernetes.io/managed-by": "den"}
    assert Installation().owns(made_by_old_den) and not OTHER.owns(made_by_old_den)
    assert OTHER.owns({"den.dev/installation": "7f3a2c"})
    assert not Installation().owns({"den.dev/installation": "7f3a2c"})
    assert not OTHER.owns({"den.dev/installation": "default"})


def test_a_new_store_takes_a_stable_id_from_its_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEN_INSTALLATION", raising=False)
    with Store(tmp_path / "a" / "state.db") as store:
        first = store.installation
    with Store(tmp_path / "a" / "state.db") as store:
        assert store.installation == first
    with Store(tmp_path / "b" / "state.db") as store:
        assert store.installation != first
    assert not first.is_default and len(first.id) == 6


def test_den_installation_names_a_new_store_and_cannot_rename_one_with_agents(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEN_INSTALLATION", "dev")
    with Store(tmp_path / "state.db") as store:
        assert store.installation == Installation("dev")
        store.apply_all([make_agent("hello")])
    monkeypatch.setenv("DEN_INSTALLATION", "other")
    with Store(tmp_path / "state.db") as store, pytest.raises(DenError, match="is installation 'dev'"):
        store.installation  # noqa: B018
    monkeypatch.delenv("DEN_INSTALLATION")
    with Store(tmp_path / "state.db") as store:
        assert store.installation == Installation("dev")


@pytest.mark.parametrize("bad", ["Dev", "a.b", "-x", "x" * 21, "under_score"])
def test_a_bad_den_installation_is_refused_naming_the_variable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    monkeypatch.setenv("DEN_INSTALLATION", bad)
    with Store(tmp_path / "state.db") as store, pytest.raises(DenError, match="DEN_INSTALLATION"):
        store.installation  # noqa: B018


def test_a_store_from_before_installations_becomes_the_default_installation(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEN_INSTALLATION", raising=False)
    path = tmp_path / "state.db"
    with Store(path) as store:
        store.apply_all([make_agent("hello")])
    db = sqlite3.connect(path)  # as an earlier Den left it: schema 1, no settings
    db.executescript("DROP TABLE settings; DELETE FROM den_migrations WHERE version = 2;")
    db.close()
    with Store(path) as store:
        assert store.installation == Installation()
        assert [a.name for a in store.list()] == ["hello"]
    with Store(path) as store:  # and stays so
        assert store.installation == Installation()


def test_the_planner_names_and_labels_an_agent_for_its_installation_and_pins_the_image_id() -> None:
    seen = Observed(image_id="sha256:built-here", layout=Layout("172.29.0.0/16"), net_image_id="sha256:egress",
                    installation=OTHER)
    desired = desired_container(make_agent("hello"), seen, 8800, address="172.29.1.1")
    assert (desired.name, desired.volume, desired.net.name) \
        == ("den-7f3a2c.hello", "den-7f3a2c.hello-home", "den-7f3a2c.hello-net")
    assert desired.labels["den.dev/installation"] == desired.net.labels["den.dev/installation"] == "7f3a2c"
    assert desired.image == "sha256:built-here" and desired.net.image == "sha256:egress"
    assert desired.labels["den.dev/image"] == make_agent("hello").spec.runtime.base
    assert desired.net.network == "den-7f3a2c"
    # inside the agent the gateway and the proxy keep their names, at this installation's addresses
    assert desired.net.hosts == {"den-gateway": "172.29.0.2", "den-egress": "172.29.0.3"}
