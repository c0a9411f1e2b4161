"""The den-operator image (`hack/build-image.sh --operator`), run the way the Helm chart runs it.

Built by the same offline path as den-runtime (a no-op when its content hash is current; after
the session's runtime build only the operator's two layers are new). Every container runs with
the chart's pod hardening: read-only root, an emptyDir-like /tmp as HOME, no capabilities.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.docker, pytest.mark.slow]

IMAGE = "den-operator:latest"
LABEL = {"den.dev/test": "operator-image"}


@pytest.fixture(scope="module")
def operator_image(docker_client) -> str:
    done = subprocess.run(["bash", str(ROOT / "hack" / "build-image.sh"), "--operator"], cwd=ROOT,
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return IMAGE


def run(docker_client, image: str, command: list[str] | None = None) -> tuple[int, str]:
    """Run the image to completion (its own CMD when ``command`` is None): exit code, output."""
    container = docker_client.containers.run(
        image, command, detach=True, labels=LABEL, network_mode="none", read_only=True,
        tmpfs={"/tmp": ""}, environment={"HOME": "/tmp"}, cap_drop=["ALL"],
        security_opt=["no-new-privileges"])
    try:
        code = container.wait(timeout=120)["StatusCode"]
        return code, container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)


def test_the_operator_image_has_kopf_and_kubernetes_no_litellm_and_runs_as_10001(docker_client, operator_image) -> None:
    code, out = run(docker_client, operator_image, ["python", "-c", (
        "import importlib.util, os, kopf, kubernetes, den.operator.kopf_operator;"
        "print('uid', os.getuid(), 'litellm', importlib.util.find_spec('litellm') is not None)")])
    assert code == 0, out
    assert "uid 10001 litellm False" in out
    code, out = run(docker_client, operator_image, ["den", "operator", "run", "--kubernetes", "--help"])
    assert code == 0 and "--namespace" in out, out


def test_the_default_command_is_the_kubernetes_operator(docker_client, operator_image) -> None:
    # No in-cluster service account, no kubeconfig: the kopf operator's own clear refusal.
    code, out = run(docker_client, operator_image)
    assert code != 0
    assert "cannot load Kubernetes credentials" in out, out
    assert "Traceback" not in out, out
