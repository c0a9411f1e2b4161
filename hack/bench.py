"""`make bench`: Den's speed, measured on this machine (never in timed tests).

Writes bench/results/<UTC time>.json and bench/results/latest.json and prints a table.

- up_ready_s vs bare_run_readyz_200_s: `den up` of an agent to Ready, against a
  bare `docker create`+copy config+`start` of the same image to its first HTTP 200
  on /readyz (the same criterion; /healthz answers earlier, while the model
  library is still loading, and is reported too);
- heal_after_rm_s: `docker rm -f` of a running agent until its API answers again;
- cli_help_ms / cli_status_ms: start-up of `den --help` and `den status` (median of 7);
- api_*: 200 plain chat completions through the agent's API and the model gateway
  against the scripted model called directly (p50, p99, what agent + gateway add),
  and the first-token latency they add when streaming (all in this process, real
  HTTP on 127.0.0.1);
- idle_agent_rss_mb: memory of an idle agent's container after it answered once;
- network_container_rss_mb / egress_proxy_rss_mb: what the network policy costs: an
  agent's network container, and the one egress proxy (idle);
- image_runtime_mb / image_gateway_mb / image_egress_mb: the three images' sizes;
- fleet_*: 50 agents applied at once (one directory, the operator running) until
  all are Ready, and the memory all their containers use then.
- request_*_peak_over_idle_mb (also alone, with the kill -9 figures: `--agent`): the agent's
  peak memory above its idle use while one chat message of 256 KB, 1, 8 and 32 MB is answered
  or refused (the memory cgroup's high-water mark), its status, and whether the agent survived;
- kill9_*: kill -9 of the agent and of the gateway until a chat is answered again, and of the
  operator during a `den up` until the next `den up` has everything Ready;
- memory_* (also alone: `python hack/bench.py --memory`): in this process on the
  host (not in a CPU-limited container), the agent's memory store with the
  wordllama embedder: durable writes a second, embedding a second, hybrid recall
  p50/p95 at 10k and 100k memories, and recall@5 on a generated set of
  paraphrased needles (hybrid against vector-only and keyword-only), and the
  answer latency with fact extraction off and on (it runs after the answer);
  memory_container_* (alone: `--memory-container`): recall p50/p95 inside the
  agent image with one CPU.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path

#: The targets of the model-gateway work, shown beside the measurements.
GOALS = {
    "up_ready_s": "<= 1.5",
    "up_over_bare_ratio": "<= 1.3",
    "idle_agent_rss_mb": "<= 80",
    "fleet_all_ready_s": "<= 60 (50 agents, 2 cores)",
    "api_added_p50_ms": "<= 3",
    "api_added_p99_ms": "<= 10",
    "memory_recall_100k_p95_ms": "<= 20",
    "memory_container_recall_100k_p95_ms": "<= 20",
}
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


def agentfile(folder: Path, name: str, model_port: int = 9) -> Path:
    """An agent on the default memory limit (512m) whose model is the scripted one on ``model_port``
    of the Docker bridge (this machine)."""
    path = folder / "Agentfile"
    path.write_text(
        f"name: {name}\nmodel: {{provider: openai, name: scripted, "
        f"base_url: 'http://host.docker.internal:{model_port}/v1'}}\n"
        "runtime: {cpu: 1, network: host}\n"
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
        container.put_archive("/den", _tar({"/den/.den/agent.json": (json.dumps(manifest).encode(), 0o644)}))
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


class _Served:
    """uvicorn in a thread on 127.0.0.1 (this machine only)."""

    def __init__(self, app, host: str = "127.0.0.1") -> None:
        import socket
        import threading

        import uvicorn

        with socket.socket() as sock:
            sock.bind((host, 0))
            port = sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://{host}:{port}"

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)
        return self.url

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def api_overhead(requests: int = 200) -> dict[str, float]:
    """A plain chat completion through the agent's API vs the scripted model directly (same
    process, real HTTP on loopback), and the first-token latency the agent adds when streaming."""
    import httpx

    from den.api.resource import Agent
    from den.runtime.app import create_app
    from den.runtime.scripted_model import create_scripted_app

    body = {"model": "scripted", "messages": [{"role": "user", "content": "ping"}]}
    headers: dict[str, str] = {}

    def timings(url: str, stream: bool, count: int = requests) -> list[float]:
        out = []
        with httpx.Client(timeout=30) as client:
            for _ in range(count):
                start = time.perf_counter()
                if stream:
                    with client.stream("POST", f"{url}/v1/chat/completions", json={**body, "stream": True},
                                       headers=headers) as r:
                        for line in r.iter_lines():
                            if '"content"' in line and '"content": ""' not in line and '"content":""' not in line:
                                break  # the first token arrived
                else:
                    client.post(f"{url}/v1/chat/completions", json=body, headers=headers).raise_for_status()
                out.append(time.perf_counter() - start)
        return out

    from den.runtime.gateway.app import build_app

    with tempfile.TemporaryDirectory() as folder, _Served(create_scripted_app()) as model_url:
        config, data = Path(folder) / "config", Path(folder) / "data"
        config.mkdir()
        data.mkdir()
        gateway_token, api_token = "dengw_bench", "den_bench"
        (config / "agents.json").write_text(json.dumps({"admin_token_sha256": "0" * 64, "agents": {
            hashlib.sha256(gateway_token.encode()).hexdigest(): {
                "namespace": "default", "name": "bench",
                "model": {"provider": "openai", "name": "scripted", "base_url": f"{model_url}/v1",
                          "temperature": 0.7, "max_tokens": 256},
                "budget": {"usd_per_day": None, "tokens_per_day": None}}}}))
        (config / "keys.json").write_text(json.dumps({"OPENAI_API_KEY": "sk-bench"}))
        with _Served(build_app(config, data)) as gateway_url:
            agent = Agent.model_validate({"metadata": {"name": "bench", "generation": 1},
                                          "spec": {"model": {"provider": "openai", "name": "scripted",
                                                             "base_url": f"{model_url}/v1"}}})
            app = create_app(agent, env={"DEN_API_TOKEN": api_token, "DEN_GATEWAY_URL": f"{gateway_url}/v1",
                                         "DEN_GATEWAY_TOKEN": gateway_token})
            with _Served(app) as agent_url:
                headers["Authorization"] = f"Bearer {api_token}"
                while httpx.get(f"{agent_url}/readyz").status_code != 200:
                    time.sleep(0.1)
                timings(agent_url, False, count=10)  # warm up
                direct, through = timings(model_url, False), timings(agent_url, False)
                direct_first, through_first = timings(model_url, True), timings(agent_url, True)
    return {
        "api_direct_p50_ms": percentile(direct, 0.5) * 1000,
        "api_direct_p99_ms": percentile(direct, 0.99) * 1000,
        "api_agent_p50_ms": percentile(through, 0.5) * 1000,
        "api_agent_p99_ms": percentile(through, 0.99) * 1000,
        "api_overhead_ratio_p50": percentile(through, 0.5) / percentile(direct, 0.5),
        "api_added_p50_ms": (percentile(through, 0.5) - percentile(direct, 0.5)) * 1000,
        "api_added_p99_ms": (percentile(through, 0.99) - percentile(direct, 0.99)) * 1000,
        "first_token_direct_p50_ms": percentile(direct_first, 0.5) * 1000,
        "first_token_agent_p50_ms": percentile(through_first, 0.5) * 1000,
        "first_token_added_p50_ms": (percentile(through_first, 0.5) - percentile(direct_first, 0.5)) * 1000,
    }


def container_memory_mb(names: list[str]) -> float:
    """Memory the containers use now (usage less inactive file cache), in MiB."""
    import docker

    client = docker.from_env()
    total = 0
    for name in names:
        raw = client.containers.get(name).stats(stream=False)
        memory = raw.get("memory_stats", {})
        total += memory.get("usage", 0) - (memory.get("stats", {}) or {}).get("inactive_file", 0)
    return total / (1024 * 1024)


def _chat(endpoint: str, token: str, content: str, timeout: float = 120) -> int:
    """POST one chat completion; its status (0: the connection broke, as when the agent dies)."""
    body = json.dumps({"messages": [{"role": "user", "content": content}]}).encode()
    request = urllib.request.Request(f"{endpoint}/v1/chat/completions", data=body, method="POST",
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0


def _memory_files(container: str) -> tuple[Path, Path]:
    """(usage now, peak usage) of a container's memory cgroup on the host (v1, else v2)."""
    cid = subprocess.run(["docker", "inspect", "-f", "{{.Id}}", container], capture_output=True, text=True,
                         check=True).stdout.strip()
    for folder in (Path("/sys/fs/cgroup/memory/docker") / cid, Path("/sys/fs/cgroup/memory/system.slice") /
                   f"docker-{cid}.scope"):
        if folder.exists():
            return folder / "memory.usage_in_bytes", folder / "memory.max_usage_in_bytes"
    folder = next(Path("/sys/fs/cgroup").glob(f"**/*{cid}*"))
    return folder / "memory.current", folder / "memory.peak"


def request_size_peaks(container: str, endpoint: str, token: str) -> dict[str, float]:
    """The agent's peak memory over its idle use while it answers (or refuses) one chat message of
    256 KB, 1 MB, 8 MB and 32 MB of ordinary words; whether it survived each (0/1)."""
    current, peak = _memory_files(container)
    results: dict[str, float] = {}
    started = subprocess.run(["docker", "inspect", "-f", "{{.State.StartedAt}}", container], capture_output=True,
                             text=True).stdout
    for label, size in (("256k", 256 * 1024), ("1m", 1 << 20), ("8m", 8 << 20), ("32m", 32 << 20)):
        idle = int(current.read_text())
        try:
            peak.write_text("0")  # v1: reset the high-water mark
        except OSError:
            pass
        status = _chat(endpoint, token, "word " * (size // 5))
        results[f"request_{label}_status"] = status
        results[f"request_{label}_peak_over_idle_mb"] = (int(peak.read_text()) - idle) / (1024 * 1024)
    same = subprocess.run(["docker", "inspect", "-f", "{{.State.StartedAt}}", container], capture_output=True,
                          text=True).stdout == started
    results["request_sizes_agent_survived"] = float(same and _chat(endpoint, token, "still there?") == 200)
    return results


def kill_recoveries(inst, name: str, path: Path, env: dict[str, str]) -> dict[str, float]:
    """kill -9 of the agent and of the gateway until a chat completion is answered again, and of the
    operator during a den up until everything is Ready after the next den up."""
    out = subprocess.run([*DEN, "api", name, "-o", "json"], env=env, check=True, capture_output=True, text=True)
    endpoint, token = json.loads(out.stdout)["endpoint"], json.loads(out.stdout)["token"]
    results = {}
    for label, container in (("agent", inst.container_name(name)), ("gateway", inst.gateway)):
        subprocess.run(["docker", "kill", "-s", "KILL", container], check=True, capture_output=True)
        start = time.monotonic()
        while _chat(endpoint, token, "are you back?", timeout=5) != 200:
            if time.monotonic() - start > 120:
                raise RuntimeError(f"no answer 120 s after kill -9 of the {label}")
            time.sleep(0.1)
        results[f"kill9_{label}_answering_s"] = time.monotonic() - start
    other = path.with_name("second.Agentfile")
    other.write_text(path.read_text().replace(f"name: {name}", f"name: {name}-2"))
    up = subprocess.Popen([*DEN, "up", str(other)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    from den.operator.controller import OperatorLock

    pid = OperatorLock(Path(env["DEN_HOME"]) / "operator.lock").holder()
    if pid and pid > 0:
        os.kill(pid, 9)
    up.wait(timeout=120)
    start = time.monotonic()
    subprocess.run([*DEN, "up", str(other)], env=env, check=True, capture_output=True)
    results["kill9_operator_converged_s"] = time.monotonic() - start
    subprocess.run([*DEN, "destroy", f"{name}-2", "--yes"], env=env, capture_output=True)
    return results


def image_mb(image: str) -> float:
    out = subprocess.run(["docker", "image", "inspect", "-f", "{{.Size}}", image],
                         capture_output=True, text=True, check=True)
    return int(out.stdout.strip()) / (1024 * 1024)


def fleet(home: Path, env: dict[str, str], inst, count: int = 50) -> dict[str, float]:
    """``count`` agents applied at once with the operator running, until all are Ready."""
    folder = home / "fleet"
    folder.mkdir()
    names = [f"fleet-{uuid.uuid4().hex[:6]}-{i}" for i in range(count)]
    for name in names:
        (folder / f"{name}.yaml").write_text(
            f"name: {name}\nmodel: {{provider: openai, name: scripted, base_url: 'http://host.docker.internal:9/v1'}}\n"
            "runtime: {cpu: 0.25, memory: 128m, network: host}\n")
    subprocess.Popen([*DEN, "operator", "run", "--log-file", str(home / "operator.log")], env=env,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    time.sleep(1.0)
    start = time.monotonic()
    subprocess.run([*DEN, "apply", "-f", str(folder)], env=env, check=True, capture_output=True)
    deadline = start + 600
    while time.monotonic() < deadline:
        out = subprocess.run([*DEN, "get", "agents", "-o", "json"], env=env, capture_output=True, text=True)
        items = json.loads(out.stdout)["items"]
        ready = [a for a in items if any(c["type"] == "Ready" and c["status"] == "True"
                                         for c in (a.get("status") or {}).get("conditions", []))]
        if len(ready) == count:
            break
        time.sleep(0.5)
    else:
        raise RuntimeError(f"the fleet was not Ready in 600 s ({len(ready)}/{count})")
    elapsed = time.monotonic() - start
    memory = container_memory_mb([inst.container_name(n) for n in names])
    # Stop the operator first, or it heals the containers back as they are removed.
    subprocess.run([*DEN, "operator", "stop"], env=env, capture_output=True)
    for name in names:
        subprocess.run(["docker", "rm", "-f", inst.container_name(name), inst.net_container_name(name)],
                       capture_output=True)
        subprocess.run(["docker", "volume", "rm", "-f", inst.volume_name(name)], capture_output=True)
    return {"fleet_agents": count, "fleet_all_ready_s": elapsed, "fleet_memory_mb": memory,
            "fleet_memory_per_agent_mb": memory / count}


# -- memory ------------------------------------------------------------------------------------

NAMES = ["Ada", "Bruno", "Chiara", "Dmitri", "Elena", "Farid", "Greta", "Hiro", "Ines", "Jonas", "Kemal",
         "Lucia", "Mateo", "Nadia", "Oskar", "Priya", "Quentin", "Rosa", "Soren", "Tamar"]
#: (what is remembered, how it is asked later: other words for the same thing)
NEEDLES = [
    ("{n} keeps a small grey cat called Pepper at home", "what pet does {n} have"),
    ("{n} drives an old red Volvo to the office", "which car does {n} commute in"),
    ("{n} is allergic to peanuts and shellfish", "what food can {n} not eat"),
    ("{n} was born in Porto and grew up near the sea", "where is {n} from originally"),
    ("{n} plays the cello in an amateur orchestra", "which musical instrument does {n} play"),
    ("{n} prefers green tea over coffee in the morning", "what does {n} like to drink at breakfast"),
    ("{n} works as a nurse at the city hospital", "what is the job of {n}"),
    ("{n} runs a marathon every spring", "what sport does {n} do"),
]
FILLER = ["the weekly report was sent on {d}", "a meeting about the budget moved to {d}",
          "the printer on floor {k} is out of toner", "release {k} shipped with {k} fixes",
          "lunch on {d} was pasta with friends", "the train to the coast left at {k} o'clock"]


def memory_bench(sizes: tuple[int, ...] = (10_000, 100_000)) -> dict[str, float]:
    """Write throughput, recall latency and recall@5 of the agent memory (module docstring)."""
    import random

    from den.api.agentfile import MemorySpec
    from den.runtime.memory.agent import AgentMemory
    from den.runtime.memory.embed import WordLlamaEmbedder

    rng = random.Random(7)
    results: dict[str, float] = {}
    folder = Path(tempfile.mkdtemp(prefix="den-bench-memory-"))
    embedder = WordLlamaEmbedder()
    memory = AgentMemory(folder / "writes.db", MemorySpec(), embedder)
    start = time.perf_counter()
    for i in range(300):
        memory.store.add(f"note {i}: " + FILLER[i % len(FILLER)].format(d="Monday", k=i))
    results["memory_write_per_s"] = 300 / (time.perf_counter() - start)
    memory.close()
    for size in sizes:
        memory = AgentMemory(folder / f"recall-{size}.db", MemorySpec(), embedder)
        needles = {}
        records = []
        for n in NAMES:
            for statement, question in NEEDLES:
                records.append({"type": "memory", "id": len(records) + 1, "kind": "memo",
                                "text": statement.format(n=n)})
                needles[len(records)] = question.format(n=n)
        while len(records) < size:
            text = rng.choice(FILLER).format(d=rng.choice(["Monday", "Friday", "May 3"]), k=rng.randint(1, 999))
            records.append({"type": "memory", "id": len(records) + 1, "kind": "memo",
                            "text": f"{rng.choice(NAMES)}: {text}"})
        memory.store.import_records(records)
        start = time.perf_counter()
        memory.index_pending()
        results[f"memory_embed_{size // 1000}k_per_s"] = size / (time.perf_counter() - start)
        questions = list(needles.items())
        for mode in ("hybrid", "vector", "keyword"):
            hits = sum(1 for target, q in questions if target in [m.id for m in memory.recall(q, 5, mode=mode)])
            results[f"memory_recall_at5_{mode}_{size // 1000}k"] = hits / len(questions)
        latencies = []
        for _ in range(3):
            for _, q in questions:
                start = time.perf_counter()
                memory.recall(q, 10)
                latencies.append((time.perf_counter() - start) * 1000)
        results[f"memory_recall_{size // 1000}k_p50_ms"] = percentile(latencies, 0.5)
        results[f"memory_recall_{size // 1000}k_p95_ms"] = percentile(latencies, 0.95)
        memory.close()
    results.update(answer_latency_with_memory())
    return results


CONTAINER_RECALL = r"""
import json, random, sys, tempfile, time
from pathlib import Path
from den.api.agentfile import MemorySpec
from den.runtime.memory.agent import AgentMemory
from den.runtime.memory.embed import WordLlamaEmbedder
names, needles, filler = json.loads(sys.argv[1])
rng, out, embedder = random.Random(7), {}, WordLlamaEmbedder()
for size in json.loads(sys.argv[2]):
    memory = AgentMemory(Path(tempfile.mkdtemp()) / "m.db", MemorySpec(), embedder)
    records, questions = [], []
    for n in names:
        for statement, question in needles:
            records.append({"type": "memory", "id": len(records) + 1, "kind": "memo", "text": statement.format(n=n)})
            questions.append(question.format(n=n))
    while len(records) < size:
        text = rng.choice(filler).format(d="Monday", k=rng.randint(1, 999))
        records.append({"type": "memory", "id": len(records) + 1, "kind": "memo", "text": f"{rng.choice(names)}: {text}"})
    memory.store.import_records(records)
    memory.index_pending()
    latencies = []
    for q in questions * 3:
        start = time.perf_counter()
        memory.recall(q, 10)
        latencies.append((time.perf_counter() - start) * 1000)
    latencies.sort()
    out[f"memory_container_recall_{size // 1000}k_p50_ms"] = latencies[len(latencies) // 2]
    out[f"memory_container_recall_{size // 1000}k_p95_ms"] = latencies[int(len(latencies) * 0.95)]
    memory.close()
print(json.dumps(out))
"""


def memory_bench_in_container(sizes: tuple[int, ...] = (10_000, 100_000), cpus: float = 1.0) -> dict[str, float]:
    """Recall p50/p95 inside den-runtime:latest with a CPU limit (the agent's own Python and SQLite)."""
    data = json.dumps([NAMES, NEEDLES, FILLER])
    done = subprocess.run(["docker", "run", "--rm", f"--cpus={cpus}", "--memory=768m", "--label", "den.dev/bench=1",
                           "--entrypoint", "python", "den-runtime:latest", "-c", CONTAINER_RECALL, data,
                           json.dumps(list(sizes))], capture_output=True, text=True, timeout=1200)
    if done.returncode != 0:
        raise RuntimeError(f"the in-container memory bench failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def answer_latency_with_memory(turns: int = 60) -> dict[str, float]:
    """p50 of a chat completion (the agent straight to the scripted model, real HTTP on loopback,
    all in this process) with fact extraction off and on, turns back to back (the extraction of
    the previous turn competes for the CPU and the store) and paced 100 ms apart."""
    import httpx

    from den.api.resource import Agent
    from den.runtime.app import create_app
    from den.runtime.scripted_model import create_scripted_app

    results: dict[str, float] = {}
    with _Served(create_scripted_app()) as model_url:
        for extraction in (False, True):
            agent = Agent.model_validate({
                "apiVersion": "den.dev/v1alpha1", "kind": "Agent",
                "metadata": {"name": "bench-memory", "namespace": "default", "generation": 1},
                "spec": {"model": {"provider": "openai", "name": "scripted", "base_url": f"{model_url}/v1"},
                         "memory": {"fact_extraction": extraction}}})
            home = Path(tempfile.mkdtemp(prefix="den-bench-answer-"))
            with _Served(create_app(agent, env={"DEN_API_TOKEN": "den_bench"}, home=home)) as url, \
                    httpx.Client(timeout=30, headers={"Authorization": "Bearer den_bench"}) as client:
                key = "on" if extraction else "off"
                for pace, label in ((0.0, "back_to_back"), (0.1, "paced")):
                    latencies = []
                    for n in range(turns):
                        body = {"messages": [{"role": "user", "content": f"My project {n} is codenamed Falcon {n}."}]}
                        start = time.perf_counter()
                        client.post(f"{url}/v1/chat/completions", json=body).raise_for_status()
                        latencies.append((time.perf_counter() - start) * 1000)
                        time.sleep(pace)  # paced: the background work of a turn is done before the next
                    results[f"memory_answer_p50_ms_extraction_{key}_{label}"] = percentile(latencies[5:], 0.5)
    return results


def main() -> int:
    if "--memory" in sys.argv:
        return report(memory_bench())
    if "--memory-container" in sys.argv:  # needs the Docker lock and den-runtime:latest built from this tree
        return report(memory_bench_in_container())
    from den.operator.names import Installation

    home = Path(tempfile.mkdtemp(prefix="den-bench-"))
    inst = Installation(f"bench-{uuid.uuid4().hex[:6]}")  # its own gateway, proxy and network
    env = {**os.environ, "DEN_HOME": str(home), "DEN_INSTALLATION": inst.id, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    name = f"bench-{uuid.uuid4().hex[:6]}"
    results: dict[str, float] = {}
    model = None
    agent_only = "--agent" in sys.argv  # one agent's figures: up, sizes of requests, kill -9 recoveries
    if not agent_only:
        results["cli_help_ms"] = statistics.median(timed([*DEN, "--help"], env) for _ in range(7)) * 1000
        results["cli_status_ms"] = statistics.median(timed([*DEN, "status"], env) for _ in range(7)) * 1000
        results.update(api_overhead())
        results["bare_run_healthz_200_s"], results["bare_run_readyz_200_s"] = bare_run(name)
    try:
        from den.operator.docker_backend import host_gateway_ip
        from den.runtime.scripted_model import create_scripted_app

        model = _Served(create_scripted_app(), host=host_gateway_ip())
        model_url = model.__enter__()
        path = agentfile(home, name, int(model_url.rsplit(":", 1)[1]))
        start = time.monotonic()
        subprocess.run([*DEN, "up", str(path)], env=env, check=True, capture_output=True)
        results["up_ready_s"] = time.monotonic() - start
        if "bare_run_readyz_200_s" in results:
            results["up_over_bare_ratio"] = results["up_ready_s"] / results["bare_run_readyz_200_s"]
        out = subprocess.run([*DEN, "api", name, "-o", "json"], env=env, check=True, capture_output=True, text=True)
        endpoint = json.loads(out.stdout)["endpoint"]
        token = json.loads(out.stdout)["token"]
        request = urllib.request.Request(f"{endpoint}/v1/models", headers={"Authorization": f"Bearer {token}"})
        urllib.request.urlopen(request, timeout=10).read()
        time.sleep(2.0)
        results["idle_agent_rss_mb"] = container_memory_mb([inst.container_name(name)])
        results["network_container_rss_mb"] = container_memory_mb([inst.net_container_name(name)])
        results["egress_proxy_rss_mb"] = container_memory_mb([inst.egress])
        results["image_runtime_mb"] = image_mb("den-runtime:latest")
        results["image_gateway_mb"] = image_mb("den-gateway:latest")
        results["image_egress_mb"] = image_mb("den-egress:latest")
        results.update(request_size_peaks(inst.container_name(name), endpoint, token))
        subprocess.run(["docker", "rm", "-f", inst.container_name(name)], check=True, capture_output=True)
        start = time.monotonic()
        wait_http(f"{endpoint}/healthz", timeout=30)
        results["heal_after_rm_s"] = time.monotonic() - start
        subprocess.run(["docker", "rm", "-f", inst.gateway], check=True, capture_output=True)
        start = time.monotonic()
        wait_http(f"{endpoint}/readyz", timeout=60)
        while subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", inst.gateway],
                             capture_output=True, text=True).stdout.strip() != "true":
            time.sleep(0.1)
        results["gateway_heal_after_rm_s"] = time.monotonic() - start
        results.update(kill_recoveries(inst, name, path, env))
        subprocess.run([*DEN, "destroy", name, "--yes"], env=env, capture_output=True)
        subprocess.run([*DEN, "operator", "stop"], env=env, capture_output=True)
        if not agent_only:
            results.update(fleet(home, env, inst))
            results.update(memory_bench())
            results.update(memory_bench_in_container())
    finally:
        if model is not None:
            model.__exit__(None, None, None)
        subprocess.run([*DEN, "destroy", name, "--yes"], env=env, capture_output=True)
        subprocess.run([*DEN, "operator", "stop"], env=env, capture_output=True)
        subprocess.run(["docker", "rm", "-f", inst.gateway, inst.egress], capture_output=True)  # this bench's
        subprocess.run(["docker", "network", "rm", inst.network], capture_output=True)
        subprocess.run(["docker", "volume", "rm", inst.gateway_volume], capture_output=True)
    return report(results)


def report(results: dict[str, float]) -> int:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    record = {"time": stamp, "machine": {"cpus": os.cpu_count()},
              "goals": GOALS, "results": {k: round(v, 4) for k, v in results.items()}}
    for target in (RESULTS / f"{stamp}.json", RESULTS / "latest.json"):
        target.write_text(json.dumps(record, indent=2) + "\n")
    width = max(map(len, results))
    print(f"{'measurement'.ljust(width)}  {'value':>10}  goal")
    for key, value in results.items():
        print(f"{key.ljust(width)}  {value:10.3f}  {GOALS.get(key, '')}")
    print(f"\nwritten to {RESULTS / (stamp + '.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
