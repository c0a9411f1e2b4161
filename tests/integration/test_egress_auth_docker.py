"""The Kubernetes egress proxy's config, run by the real den-egress image (squid).

On a cluster agents are known to the proxy by proxy credentials (pod addresses change),
not by source address. This renders squid.conf and passwd with the operator's own code
(:func:`den.operator.kubernetes_render.egress_files`) for two agents, runs squid from
den-egress:latest as the chart runs it (unprivileged, read-only, no capabilities), and
asks through it as each agent, as nobody, and with a wrong password. The "world" is a
web server on a test network under the names ``a.test`` and ``b.test``.
"""

from __future__ import annotations

import base64
import http.client
import uuid

import pytest

from den.operator import htpasswd
from den.operator import kubernetes_render as render
from tests.conftest import free_port
from tests.integration.test_network_docker import wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]

WEB = r"""
use IO::Socket::INET; $| = 1;
my $s = IO::Socket::INET->new(LocalPort => 8080, Listen => 16, ReuseAddr => 1) or die "listen: $!";
print "ready\n";
while (my $c = $s->accept) {
    my $host = "?";
    while (my $l = <$c>) { $l =~ s/\r?\n$//; last if $l eq ""; $host = $1 if $l =~ /^Host:\s*(\S+)/i; }
    my $b = "hello from $host";
    print $c "HTTP/1.1 200 OK\r\nContent-Length: " . length($b) . "\r\nConnection: close\r\n\r\n$b";
    close $c;
}
"""

PASSWORDS = {"team.a": "pw-a-" + uuid.uuid4().hex, "team.b": "pw-b-" + uuid.uuid4().hex}


@pytest.fixture(scope="module")
def proxy(docker_client, tmp_path_factory, runtime_image):
    """squid with the rendered config on 127.0.0.1:<port>; everything removed afterwards.
    (``runtime_image`` runs hack/build-image.sh, which builds den-egress:latest too.)"""
    suffix = uuid.uuid4().hex[:6]
    clients = {
        "team.a": {"agent": "team/a", "hash": htpasswd.md5_crypt(PASSWORDS["team.a"]), "allow": ["a.test:8080"]},
        "team.b": {"agent": "team/b", "hash": htpasswd.md5_crypt(PASSWORDS["team.b"]), "allow": ["b.test:8080"]},
    }
    folder = tmp_path_factory.mktemp("den-egress-auth")
    folder.chmod(0o755)
    for name, text in render.egress_files(clients, []).items():
        (folder / name).write_text(text)
        (folder / name).chmod(0o644)
    labels = {"den.test": "egress-auth"}
    net = docker_client.networks.create(f"den-egress-auth-{suffix}", labels=labels)
    started = []
    try:
        web = docker_client.containers.create("den-egress:latest", ["perl", "-e", WEB], entrypoint=[],
                                              name=f"den-egress-auth-web-{suffix}", labels=labels,
                                              user="10002", network=net.name)
        started.append(web)
        net.disconnect(web)
        net.connect(web, aliases=["a.test", "b.test"])
        web.start()
        port = free_port()
        squid = docker_client.containers.run(
            "den-egress:latest", name=f"den-egress-auth-squid-{suffix}", labels=labels, detach=True,
            user="10002", read_only=True, cap_drop=["ALL"], security_opt=["no-new-privileges"],
            tmpfs={"/tmp": "rw,size=64m"}, network=net.name, ports={"3128/tcp": ("127.0.0.1", port)},
            volumes={str(folder): {"bind": "/etc/den-egress", "mode": "ro"}})
        started.append(squid)
        wait_until(lambda: b"ready" in web.logs(), 30)

        def listening() -> bool:
            squid.reload()
            assert squid.status != "exited", squid.logs().decode()[-2000:]
            return b"Accepting HTTP Socket connections" in squid.logs()
        wait_until(listening, 60, 0.5)
        yield port, squid
    finally:
        for container in started:
            container.remove(force=True, v=True)
        net.remove()


def ask(port: int, url: str, user: str | None = None, password: str | None = None) -> tuple[int, str, str]:
    headers = {}
    if user:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        headers["Proxy-Authorization"] = f"Basic {token}"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request("GET", url, headers=headers)
        response = conn.getresponse()
        return response.status, response.getheader("X-Squid-Error") or "", response.read().decode(errors="replace")
    finally:
        conn.close()


def connect(port: int, target: str, user: str, password: str) -> int:
    """The status squid answers a CONNECT with (what HTTPS clients send through HTTPS_PROXY)."""
    import socket

    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"
                     f"Proxy-Authorization: Basic {token}\r\n\r\n".encode())
        return int(sock.recv(4096).split(b" ", 2)[1])


def test_each_agent_reaches_its_own_allowlist_only_and_nobody_gets_through_without_credentials(proxy) -> None:
    port, squid = proxy
    a, b = ("team.a", PASSWORDS["team.a"]), ("team.b", PASSWORDS["team.b"])

    status, _, body = ask(port, "http://a.test:8080/", *a)
    assert (status, body) == (200, "hello from a.test:8080")
    status, _, body = ask(port, "http://b.test:8080/", *b)  # the control: B's own name works for B
    assert (status, body) == (200, "hello from b.test:8080")

    status, error, body = ask(port, "http://b.test:8080/", *a)  # B's name with A's credentials
    assert status == 403 and error.startswith("ERR_DEN_BLOCKED")
    assert "blocked by network policy: b.test" in body
    status, error, _ = ask(port, "http://a.test:8080/")  # no credentials at all
    assert status == 403 and error.startswith("ERR_DEN_BLOCKED")
    status, _, _ = ask(port, "http://a.test:8080/", "team.a", PASSWORDS["team.b"])  # a wrong password
    assert status == 407
    status, error, _ = ask(port, "http://a.test:80/", *a)  # the allowed name on another port
    assert status == 403 and error.startswith("ERR_DEN_BLOCKED")

    assert connect(port, "a.test:8080", *a) == 200  # tunnels too: A's name for A only
    assert connect(port, "a.test:8080", *b) == 403

    logs = squid.logs().decode()
    assert "team.a TCP_MISS/200 GET http://a.test:8080/" in logs  # the access log names the agent
    assert "team.a TCP_DENIED/403 GET http://b.test:8080/" in logs
