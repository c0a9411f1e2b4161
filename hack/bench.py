"""`make bench`: Den's speed, measured on this machine (never in timed tests).

Writes bench/results/<UTC time>.json and bench/results/latest.json and prints a table.

- up_ready_s vs bare_run_readyz_200_s: `den up` of an agent to Ready, against a
  bare `docker create`+copy config+`start` of the same image to its first HTTP 200
  on /readyz (the same criterion; /healthz answers earlier, while the model
  library is still loading, and is reported too);
- heal_after_rm_s: `docker rm -f` of a running agent until its API answers again;
- cli_help_ms / cli_status_ms: start-up of `den --help` and `den status` (median of 7).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DEN = [sys.executable, "-m", "den"]


def wait_http(url: str, timeout: float = 60.0) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            with urllib.request.urlopen(url, timeout=0.5) as response:
                if response.status == 200:
                    return time.monotonic() - start
        except Exception:
            time.sleep(0.02)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def timed(args: list[str], env: dict[str, str]) -> float:
    start = time.monotonic()
    subprocess.run(args, env=env, check=True, capture_output=True)
    return time.monotonic() - start


def agentfile(folder: Path, name: str) -> Path:
    path = folder / "Agentfile"
    path.write_text(
        f"name: {name}\nmodel: {{provider: openai, name: scripted, base_url: 'http://host.docker.internal:9/v1'}}\n"
        "runtime: {cpu: 1, memory: 256m, network: host}\n"
    )
    return path


def bare_run(name: str) -> tuple[float, float]:
    """Seconds to the first 200 of /healthz and of /readyz (the criterion `den up` waits for)."""
    import docker
    from den.operator.docker_backend import _tar

    client = docker.from_env()
    manifest = {"apiVersion": "den.dev/v1alpha1", "kind": "Agent",
                "metadata": {"name": name, "generation": 1},
                "spec": {"model": {"provider": "openai", "name": "scripted"}}}
    start = time.monotonic()
    container = client.containers.create(
        "den-runtime:latest", name=f"bench-bare-{name}", detach=True,
        ports={"8800/tcp": ("127.0.0.1", None)}, labels={"den.dev/bench": "1"},
        environment={"DEN_CONFIG": "/den/.den/agent.json"},
    )
    try:
        container.put_archive("/den", _tar({"agent.json": (json.dumps(manifest).encode(), 0o644)}))
        container.start()
        container.reload()
        port = container.attrs["NetworkSettings"]["Ports"]["8800/tcp"][0]["HostPort"]
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/healthz")
        health = time.monotonic() - start
        wait_http(f"{base}/readyz")
        return health, time.monotonic() - start
    finally:
        container.remove(force=True, v=True)


def main() -> int:
    home = Path(tempfile.mkdtemp(prefix="den-bench-"))
    env = {**os.environ, "DEN_HOME": str(home), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    name = f"bench-{uuid.uuid4().hex[:6]}"
    results: dict[str, float] = {}
    try:
        results["cli_help_ms"] = statistics.median(timed([*DEN, "--help"], env) for _ in range(7)) * 1000
        results["cli_status_ms"] = statistics.median(timed([*DEN, "status"], env) for _ in range(7)) * 1000
        results["bare_run_healthz_200_s"], results["bare_run_readyz_200_s"] = bare_run(name)
        path = agentfile(home, name)
        start = time.monotonic()
        subprocess.run([*DEN, "up", str(path)], env=env, check=True, capture_output=True)
        results["up_ready_s"] = time.monotonic() - start
        results["up_over_bare_ratio"] = results["up_ready_s"] / results["bare_run_readyz_200_s"]
        out = subprocess.run([*DEN, "api", name, "-o", "json"], env=env, check=True, capture_output=True, text=True)
        endpoint = json.loads(out.stdout)["endpoint"]
        subprocess.run(["docker", "rm", "-f", f"den-{name}"], check=True, capture_output=True)
        start = time.monotonic()
        wait_http(f"{endpoint}/healthz", timeout=30)
        results["heal_after_rm_s"] = time.monotonic() - start
    finally:
        subprocess.run([*DEN, "destroy", name, "--yes"], env=env, capture_output=True)
        subprocess.run([*DEN, "operator", "stop"], env=env, capture_output=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    record = {"time": stamp, "machine": {"cpus": os.cpu_count()}, "results": {k: round(v, 4) for k, v in results.items()}}
    for target in (RESULTS / f"{stamp}.json", RESULTS / "latest.json"):
        target.write_text(json.dumps(record, indent=2) + "\n")
    width = max(map(len, results))
    print(f"{'measurement'.ljust(width)}  value")
    for key, value in results.items():
        print(f"{key.ljust(width)}  {value:.3f}")
    print(f"\nwritten to {RESULTS / (stamp + '.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
