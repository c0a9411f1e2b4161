"""Network policy on real Docker, tested from the attacker's side.

Every attack runs from inside an agent, through its own tools (``shell_exec``
with Python one-liners, ``http_request``, ``web_fetch``), the way a
prompt-injected agent would try it. A ``host`` agent runs the same attacks as
the control: where it gets through, the test could have failed.

One module-wide world (one DEN_HOME, one operator, four agents) keeps this
fast. The targets are this machine's only: a test web server on a network the
test creates (names ``allowed.test``, ``a.wild.test``, ``wild.test``,
``refused.test``, ``other.test``, ``alt.test``; it is also attached to Den's
network as a neighbour and records DNS queries sent to it on UDP 53), and a
TCP service on the host bound to every address.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid

import httpx
import pytest

from tests.conftest import new_installation, remove_installation, serve_app
from tests.integration.test_docker_lifecycle import gateway_ip, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]

WEB_SCRIPT = r"""
import http.server, socket, sys, threading
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith('/redirect'):
            self.send_response(302); self.send_header('Location', 'http://refused.test/'); self.end_headers(); return
        body = ('hello from ' + self.headers.get('Host', '?')).encode()
        self.send_response(200); self.send_header('Content-Length', str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args): pass
for port in (80, 443, 8081):
    server = http.server.ThreadingHTTPServer(('0.0.0.0', port), H)
    threading.Thread(target=server.serve_forever, daemon=True).start()
dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); dns.bind(('0.0.0.0', 53))
print('ready', flush=True)
while True:
    data, peer = dns.recvfrom(512)
    print('dns query from', peer[0], flush=True)
"""

#: Prints one JSON object: target -> "CONNECTED" or the error. Run inside an agent.
PROBE = r"""
import json, socket, sys
out = {}
for target in sys.argv[1:]:
    host, port = target.rsplit(':', 1)
    try:
        socket.create_connection((host, int(port)), timeout=3).close(); out[target] = 'CONNECTED'
    except Exception as exc:
        out[target] = type(exc).__name__ + ': ' + str(exc)
print(json.dumps(out))
"""

DNS_PROBE = r"""
import socket, sys
query = bytes.fromhex('abcd01000001000000000000') + b'\x07example\x03org\x00\x00\x01\x00\x01'
for server in sys.argv[1:]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1.5)
    try:
        s.sendto(query, (server, 53)); s.recvfrom(512); print(server, 'ANSWERED')
    except Exception as exc:
        print(server, type(exc).__name__)
try:
    socket.getaddrinfo('example.org', 80); print('RESOLVED')
except Exception as exc:
    print('resolve', type(exc).__name__)
"""


class Agent:
    def __init__(self, name: str, api: dict) -> None:
        self.name, self.api = name, api

    def try_tool(self, tool: str, **args) -> str:
        """The tool's output, or "" while the agent is not answering (being replaced)."""
        try:
            return self.tool(tool, **args)["content"]
        except (httpx.HTTPError, AssertionError):
            return ""

    def tool(self, tool: str, **args) -> dict:
        response = httpx.post(f"{self.api['endpoint']}/den/v1/tools/{tool}", json=args, timeout=90,
                              headers={"Authorization": f"Bearer {self.api['token']}"})
        assert response.status_code == 200, response.text
        return response.json()

    def python(self, script: str, *args: str) -> str:
        quoted = " ".join(json.dumps(a) for a in args)
        command = f"python3 - {quoted} <<'EOF'\n{script}\nEOF"
        return self.tool("shell_exec", command=command, timeout=60)["content"]

    def probe(self, *targets: str) -> dict[str, str]:
        text = self.python(PROBE, *targets)
        line = next(line for line in text.splitlines() if line.startswith("{"))
        return json.loads(line)

    def chat(self, text: str) -> httpx.Response:
        return httpx.post(f"{self.api['base_url']}/chat/completions", timeout=60,
                          headers={"Authorization": f"Bearer {self.api['token']}"},
                          json={"messages": [{"role": "user", "content": text}]})


class HostService:
    """A TCP service on the host bound to every address; remembers who connected."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("0.0.0.0", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.peers: list[str] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            self.peers.append(peer[0])
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def net(tmp_path_factory, docker_client, runtime_image):
    """Four agents (none, filtered, filtered with another allowlist, host), a test network
    with a web server, and a host service; everything removed afterwards."""
    from den.runtime.scripted_model import create_scripted_app

    home = tmp_path_factory.mktemp("den-net-home")
    work = tmp_path_factory.mktemp("den-net-agents")
    from den.operator.names import Installation

    installation = Installation(new_installation())
    env = {**os.environ, "DEN_HOME": str(home), "DEN_INSTALLATION": installation.id, "NO_COLOR": "1",
           "COLUMNS": "200"}
    suffix = uuid.uuid4().hex[:6]

    def den(*args: str, timeout: float = 180):
        return subprocess.run([sys.executable, "-m", "den", *args], capture_output=True, text=True,
                              env=env, timeout=timeout)

    test_net = docker_client.networks.create(f"den-nettest-{suffix}", labels={"den.test": "network"})
    web = docker_client.containers.run(runtime_image, ["python3", "-c", WEB_SCRIPT], detach=True, user="0",
                                       name=f"den-nettest-web-{suffix}", labels={"den.test": "network"},
                                       network=test_net.name)
    service = HostService()
    names = {"none": f"n-{suffix}", "filtered": f"f-{suffix}", "other": f"g-{suffix}", "host": f"h-{suffix}"}
    with serve_app(create_scripted_app(), host=gateway_ip(docker_client)) as model_url:
        try:
            test_net.disconnect(web)
            test_net.connect(web, aliases=["allowed.test", "a.wild.test", "wild.test", "refused.test",
                                           "other.test", "alt.test"])
            wait_until(lambda: b"ready" in web.logs(), 30)
            model = {"provider": "openai", "name": "scripted",
                     "base_url": f"http://host.docker.internal:{model_url.rsplit(':', 1)[1]}/v1"}
            tools = ["shell_exec", "http_request", "web_fetch", "file_write", "file_read"]
            runtimes = {
                "none": {"network": "none"},
                "filtered": {"network": "filtered", "allow": ["allowed.test", "*.wild.test", "alt.test:8081"]},
                "other": {"network": "filtered", "allow": ["other.test"]},
                "host": {"network": "host"},
            }
            for role, name in names.items():
                body = {"name": name, "model": model, "tools": tools,
                        "runtime": {"cpu": 0.5, "memory": "256m", **runtimes[role]}}
                (work / f"{name}.yaml").write_text(json.dumps(body))
            operator = subprocess.Popen([sys.executable, "-m", "den", "operator", "run", "--log-file",
                                         str(home / "operator.log")], env=env, start_new_session=True,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            applied = den("apply", "-f", str(work))
            assert applied.returncode == 0, applied.stdout + applied.stderr

            def status(name: str) -> dict:
                got = den("get", "agent", name, "-o", "json")
                return json.loads(got.stdout).get("status") or {} if got.returncode == 0 else {}

            def all_ready() -> bool:
                return all(status(n).get("phase") == "Running" for n in names.values())

            wait_until(all_ready, 240, 1.0)
            egress = docker_client.containers.get(installation.egress)
            test_net.connect(egress)  # "the world" the proxy can reach
            den_net = docker_client.networks.get(installation.network)
            den_net.connect(web)  # a neighbour on Den's network
            web.reload()
            agents = {role: Agent(name, json.loads(den("api", name, "-o", "json").stdout))
                      for role, name in names.items()}
            yield {
                "agents": agents, "den": den, "status": status, "web": web, "service": service,
                "web_ip": web.attrs["NetworkSettings"]["Networks"][test_net.name]["IPAddress"],
                "neighbour_ip": web.attrs["NetworkSettings"]["Networks"][installation.network]["IPAddress"],
                "names": names, "home": home, "work": work, "installation": installation,
            }
        finally:
            try:
                service.close()
                den("delete", "agent", *names.values(), timeout=120)
                wait_until(lambda: not docker_client.api.containers(  # a listing: they are going meanwhile
                    all=True, filters={"label": f"den.dev/installation={installation.id}"}), 90, 1.0)
            except AssertionError:
                pass  # whatever is left is removed below
            finally:  # the operator goes whatever happened above: it would heal what is removed next
                den("operator", "stop")
                if "operator" in locals() and operator.poll() is None:
                    operator.kill()
                web.remove(force=True, v=True)
                remove_installation(docker_client, installation.id)
                test_net.remove()


def layout_of(docker_client, net):
    from den.operator.network import Layout

    return Layout(docker_client.networks.get(net["installation"].network).attrs["Labels"]["den.dev/subnet"])


def test_none_reaches_nothing_but_its_model(net, docker_client) -> None:
    none, host = net["agents"]["none"], net["agents"]["host"]
    layout = layout_of(docker_client, net)
    other_api = net["status"](net["names"]["host"])["network"]["address"]
    targets = [f"{net['web_ip']}:80", f"{net['neighbour_ip']}:80", f"{layout.host}:{net['service'].port}",
               f"{gateway_ip(docker_client)}:{net['service'].port}", f"{other_api}:8800",
               f"{layout.egress}:3128"]
    refused = none.probe(*targets)
    assert not any(v == "CONNECTED" for v in refused.values()), refused
    # The control: an unrestricted agent reaches its neighbour and the host service.
    control = host.probe(f"{net['neighbour_ip']}:80", f"{layout.host}:{net['service'].port}")
    assert set(control.values()) == {"CONNECTED"}, control
    assert net["service"].peers, "the host service saw the control agent"
    # No agent reaches another agent's API, not even an unrestricted one.
    none_api = net["status"](net["names"]["none"])["network"]["address"]
    assert host.probe(f"{none_api}:8800")[f"{none_api}:8800"] != "CONNECTED"
    # The tools say why; chat still works through the gateway.
    result = none.tool("http_request", url="http://allowed.test/")
    assert not result["ok"] and "blocked by network policy: allowed.test" in result["content"]
    reply = none.chat("ping")
    assert reply.status_code == 200 and "ping" in reply.json()["choices"][0]["message"]["content"]


def test_dns_never_leaves_a_none_or_filtered_agent(net, docker_client) -> None:
    web = net["web"]
    before = web.logs().count(b"dns query")
    for role in ("none", "filtered"):
        out = net["agents"][role].python(DNS_PROBE, net["neighbour_ip"], net["web_ip"], "127.0.0.11",
                                         gateway_ip(docker_client))
        assert "ANSWERED" not in out and "RESOLVED" not in out, (role, out)
    time.sleep(1)
    assert web.logs().count(b"dns query") == before, "a query reached the test's DNS recorder"
    out = net["agents"]["host"].python(DNS_PROBE, net["neighbour_ip"])  # the control
    wait_until(lambda: web.logs().count(b"dns query") > before, 10)
    assert "Timeout" in out or "ANSWERED" in out


def test_filtered_reaches_its_allowlist_through_every_client(net) -> None:
    agent = net["agents"]["filtered"]
    fetched = agent.tool("http_request", url="http://allowed.test/")
    assert fetched["ok"] and "hello from allowed.test" in fetched["content"], fetched
    page = agent.tool("web_fetch", url="http://a.wild.test/")
    assert page["ok"] and "hello from a.wild.test" in page["content"], page
    assert "hello from alt.test:8081" in agent.tool("http_request", url="http://alt.test:8081/")["content"]
    urllib_out = agent.python(
        "import urllib.request; print(urllib.request.urlopen('http://allowed.test/', timeout=10).read().decode())")
    assert "hello from allowed.test" in urllib_out
    tunnel = agent.python(
        "import http.client, os\n"
        "c = http.client.HTTPConnection('den-egress', 3128, timeout=10)\n"
        "c.set_tunnel('allowed.test', 443); c.request('GET', '/'); print(c.getresponse().read().decode())")
    assert "hello from allowed.test" in tunnel, tunnel


def test_filtered_refuses_everything_else_with_the_policy_error(net) -> None:
    agent = net["agents"]["filtered"]
    for url, host in [("http://refused.test/", "refused.test"), ("http://wild.test/", "wild.test"),
                      ("http://allowed.test:8081/", "allowed.test"),
                      (f"http://{net['web_ip']}/", net["web_ip"])]:
        result = agent.tool("http_request", url=url)
        assert not result["ok"] and f"blocked by network policy: {host}" in result["content"], (url, result)
    # Past the tools: the proxy itself refuses names, IP literals, redirects and tunnels.
    script = r"""
import urllib.request, urllib.error, http.client, sys
for url in sys.argv[1:]:
    try:
        urllib.request.urlopen(url, timeout=10); print(url, 'FETCHED')
    except urllib.error.HTTPError as exc:
        print(url, exc.code, exc.headers.get('X-Squid-Error'))
    except Exception as exc:
        print(url, type(exc).__name__)
c = http.client.HTTPConnection('den-egress', 3128, timeout=10)
c.set_tunnel('refused.test', 443)
try:
    c.request('GET', '/'); print('tunnel FETCHED')
except Exception as exc:
    print('tunnel', exc)
"""
    out = agent.python(script, "http://refused.test/", f"http://{net['web_ip']}/", "http://allowed.test/redirect")
    assert "FETCHED" not in out, out
    assert out.count("403 ERR_DEN_BLOCKED") == 3, out  # the redirect's second request is refused too
    assert "403" in out.splitlines()[-1]
    # A raw socket that ignores the proxy gets nowhere.
    raw = agent.probe(f"{net['web_ip']}:80", f"{net['web_ip']}:443")
    assert "CONNECTED" not in raw.values(), raw


def test_two_agents_each_reach_only_their_own_hosts(net) -> None:
    mine, other = net["agents"]["filtered"], net["agents"]["other"]
    assert "hello from other.test" in other.tool("http_request", url="http://other.test/")["content"]
    assert "blocked by network policy: allowed.test" in other.tool("http_request", url="http://allowed.test/")["content"]
    direct = other.python(
        "import urllib.request, urllib.error\n"
        "try:\n    urllib.request.urlopen('http://allowed.test/', timeout=10); print('FETCHED')\n"
        "except urllib.error.HTTPError as exc: print(exc.code)")
    assert "403" in direct and "FETCHED" not in direct
    assert "blocked by network policy: other.test" in mine.tool("http_request", url="http://other.test/")["content"]


def test_egress_is_counted_in_status_and_events(net) -> None:
    name = net["names"]["filtered"]
    net["agents"]["filtered"].tool("http_request", url="http://allowed.test/")
    net["agents"]["filtered"].python("import urllib.request\ntry: urllib.request.urlopen('http://refused.test/')\n"
                                     "except Exception: pass")
    network = wait_until(lambda: (lambda n: n if n.get("allowed") and n.get("refused") else None)(
        net["status"](name).get("network") or {}), 30)
    assert network["policy"] == "filtered" and network["lastRefused"]
    events = net["den"]("events", name).stdout
    assert "EgressRefused" in events and "blocked by network policy: refused.test" in events
    inspected = net["den"]("inspect", name).stdout
    assert "filtered" in inspected and "allowed.test" in inspected


def test_the_sandbox_holds_from_inside(net, docker_client) -> None:
    agent = net["agents"]["filtered"]
    script = r"""
import os, socket
print('uid', os.getuid())
status = dict(l.split(':', 1) for l in open('/proc/self/status') if ':' in l)
print('capeff', status['CapEff'].strip(), 'capbnd', status['CapBnd'].strip(), 'nnp', status['NoNewPrivs'].strip())
for path in ('/etc/den-probe', '/den/probe', '/tmp/probe'):
    try:
        open(path, 'w').write('x'); print('wrote', path)
    except OSError as exc:
        print('refused', path, exc.errno)
print('docker.sock', os.path.exists('/var/run/docker.sock'))
try:
    socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); print('raw socket OPENED')
except PermissionError:
    print('raw socket refused')
for path in ('/sys/fs/cgroup/pids.max', '/sys/fs/cgroup/pids/pids.max'):  # cgroup v2, v1
    if os.path.exists(path):
        print('pids.max', open(path).read().strip())
mounts = [l.split()[1] for l in open('/proc/mounts')]
print('mounts', sorted(m for m in mounts if m.startswith(('/den', '/tmp', '/home', '/root', '/var/run'))))
"""
    out = agent.python(script)
    assert "uid 10001" in out
    assert "capeff 0000000000000000 capbnd 0000000000000000 nnp 1" in out
    assert "refused /etc/den-probe 30" in out and "wrote /den/probe" in out and "wrote /tmp/probe" in out
    assert "docker.sock False" in out and "raw socket refused" in out and "pids.max 512" in out
    assert "mounts ['/den', '/tmp']" in out
    # The network container that holds the rules keeps no privilege after loading them.
    holder = docker_client.containers.get(net["installation"].net_container_name(net["names"]["filtered"]))
    pid1 = holder.exec_run(["cat", "/proc/1/status"]).output.decode()
    fields = dict(line.split(":", 1) for line in pid1.splitlines() if ":" in line)
    assert fields["CapEff"].strip() == "0000000000000000" and fields["Uid"].split()[0] == "65534"


def test_a_removed_network_container_heals_and_a_policy_change_keeps_the_volume(net, docker_client) -> None:
    name = net["names"]["other"]
    agent = net["agents"]["other"]
    assert agent.tool("file_write", path="kept.txt", content="still here")["ok"]
    docker_client.containers.get(net["installation"].net_container_name(name)).remove(force=True)
    wait_until(lambda: net["status"](name).get("phase") == "Running"
               and "hello from other.test" in agent.try_tool("http_request", url="http://other.test/"), 90, 1.0)
    body = json.loads((net["work"] / f"{name}.yaml").read_text())
    body["runtime"] = {**body["runtime"], "network": "none", "allow": []}
    (net["work"] / f"{name}.yaml").write_text(json.dumps(body))
    applied = net["den"]("apply", "-f", str(net["work"] / f"{name}.yaml"))
    assert applied.returncode == 0, applied.stderr

    def switched() -> bool:
        status = net["status"](name)
        return status.get("phase") == "Running" and (status.get("network") or {}).get("policy") == "none"

    wait_until(switched, 120, 1.0)
    holder = docker_client.containers.get(net["installation"].net_container_name(name))
    assert holder.labels["den.dev/network-policy"] == "none"
    assert wait_until(lambda: "still here" in agent.try_tool("file_read", path="kept.txt"), 30)
    assert "blocked by network policy: other.test" in agent.tool("http_request", url="http://other.test/")["content"]
