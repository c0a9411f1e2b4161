"""Shared fixtures: an isolated DEN_HOME and a real `den` process runner."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
EXAMPLES = ROOT / "examples"

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


#: Installations this session made (each test's DEN_HOME is one): removed at the end, whatever
#: happened, so the suite leaves nothing on the engine and never touches another installation.
_INSTALLATIONS: list[str] = []


def new_installation() -> str:
    """A fresh installation id for a test's DEN_HOME (``t-`` and 6 hex digits)."""
    installation = f"t-{uuid.uuid4().hex[:6]}"
    _INSTALLATIONS.append(installation)
    return installation


@pytest.fixture
def den_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "den-home"
    monkeypatch.setenv("DEN_HOME", str(home))
    monkeypatch.setenv("DEN_INSTALLATION", new_installation())
    return home


@pytest.fixture
def installation(den_home: Path):
    """The test's installation: what its agents, gateway, proxy and network are named."""
    from den.operator.names import Installation

    return Installation(os.environ["DEN_INSTALLATION"])


def remove_installation(client, installation: str) -> list[str]:
    """Remove every container, volume and network labelled with ``installation``; what went."""
    import docker.errors

    label = {"label": f"den.dev/installation={installation}"}
    gone = []
    for row in client.api.containers(all=True, filters=label):  # a listing: some may be going already
        try:
            client.api.remove_container(row["Id"], force=True, v=True)
            gone.append(f"container:{row['Names'][0].lstrip('/')}")
        except docker.errors.NotFound:
            pass
    for network in client.networks.list(filters=label):
        try:
            network.reload()
            for attached in network.attrs.get("Containers") or {}:
                network.disconnect(attached, force=True)
            network.remove()
            gone.append(f"network:{network.name}")
        except docker.errors.APIError:
            pass
    for volume in client.volumes.list(filters=label):
        try:
            volume.remove(force=True)
            gone.append(f"volume:{volume.name}")
        except docker.errors.APIError:
            pass
    return gone


@pytest.fixture(scope="session", autouse=True)
def _remove_the_sessions_installations():
    yield
    if not _INSTALLATIONS:
        return
    try:
        import docker

        client = docker.from_env(timeout=30)
        client.ping()
    except Exception:  # noqa: BLE001 (no Docker: nothing was made there)
        return
    for installation in _INSTALLATIONS:
        remove_installation(client, installation)


@pytest.fixture
def den(den_home: Path, tmp_path: Path):
    """Run the real `den` command in a subprocess with this test's DEN_HOME."""

    def run(*args: str, input: str | None = None, cwd: Path | None = None, timeout: float = 120) -> Result:
        env = {**os.environ, "DEN_HOME": str(den_home), "NO_COLOR": "1", "COLUMNS": "200"}
        proc = subprocess.run(
            [sys.executable, "-m", "den", *args],
            capture_output=True, text=True, input=input, cwd=cwd or tmp_path, env=env, timeout=timeout,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    return run


def _docker_client():
    try:
        import docker

        client = docker.from_env(timeout=30)
        client.ping()
        return client
    except Exception as exc:  # noqa: BLE001
        if os.environ.get("DEN_REQUIRE_DOCKER") == "1":
            pytest.fail(f"DEN_REQUIRE_DOCKER=1 but Docker is not reachable: {exc}")
        pytest.skip(f"Docker is not reachable: {exc}")


@pytest.fixture(scope="session")
def docker_client():
    return _docker_client()


@pytest.fixture(scope="session")
def runtime_image(docker_client) -> str:
    """den-runtime:latest, built once per session (a no-op when its inputs are unchanged)."""
    done = subprocess.run(["bash", str(ROOT / "hack" / "build-image.sh")], cwd=ROOT,
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return "den-runtime:latest"


def free_port(host: str = "127.0.0.1") -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class _Server:
    """uvicorn in a background thread on a real socket; stopped on exit."""

    def __init__(self, app, host: str, port: int) -> None:
        import threading

        import uvicorn

        config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://{host}:{port}"

    def __enter__(self) -> str:
        import time

        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"server on {self.url} did not start")
            time.sleep(0.01)
        return self.url

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def serve_app(app, host: str = "127.0.0.1", port: int | None = None) -> _Server:
    return _Server(app, host, port or free_port(host))
