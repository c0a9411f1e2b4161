"""The kopf operator, with the shared reconciler and the Kubernetes backend, against kmock.

kmock has no controllers: tests play the kubelet (``readyReplicas``) where one is needed.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import subprocess
import sys

import pytest
import yaml

from den.api.loader import YamlLoader, load_text
from den.operator.kube import Kube, agents, apps, core, networking
from tests.kubernetes.conftest import OPERATOR_NAMESPACE, ROOT, eventually

pytestmark = pytest.mark.asyncio

STS = apps("default", "statefulsets")
AGENT = agents("default")


def resource(path: str, name: str | None = None, namespace: str = "default") -> dict:
    """An Agentfile as the Agent resource `den export --kubernetes` prints."""
    doc = yaml.load((ROOT / path).read_text(), Loader=YamlLoader)  # YAML 1.2: `on` is a key
    meta = {"name": name or doc.pop("name"), "namespace": namespace}
    doc.pop("name", None)
    return {"apiVersion": "den.dev/v1alpha1", "kind": "Agent", "metadata": meta, "spec": doc}


async def call(fn, *args):
    return await asyncio.to_thread(fn, *args)


async def secret_json(kube: Kube, name: str, key: str, namespace: str = "default") -> dict:
    """A JSON file in a Secret, once the operator has written it (every API call runs off the
    loop: kmock serves on it)."""
    secret = await eventually(lambda: (found := kube.get(f"{core(namespace, 'secrets')}/{name}"))
                              and key in (found.get("data") or {}) and found, timeout=30, what=f"{name}/{key}")
    return json.loads(base64.b64decode(secret["data"][key]))


def condition(obj: dict | None, type_: str) -> dict:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return c
    return {}


async def kubelet_ready(kube: Kube, name: str) -> None:
    """What the StatefulSet controller and the kubelet would report once /readyz answers."""
    await call(kube.patch, f"{STS}/{name}/status", {"status": {"readyReplicas": 1, "replicas": 1}})


async def test_an_applied_agent_becomes_a_hardened_statefulset_service_policy_secret_and_status(operator):
    kube = operator
    body = resource("examples/research-analyst/Agentfile")
    body["spec"]["runtime"]["env"]["SEARCH_KEY"] = "${SEARCH_KEY}"
    created = await call(kube.create, AGENT, body)

    sts = await eventually(lambda: kube.get(f"{STS}/den-research-analyst"), what="the StatefulSet")
    assert sts["spec"]["replicas"] == 1
    assert sts["metadata"]["ownerReferences"][0]["uid"] == created["metadata"]["uid"]
    pod = sts["spec"]["template"]["spec"]
    agent = pod["containers"][0]
    assert agent["image"] == "den-runtime:latest"
    assert agent["resources"]["limits"] == {"cpu": "1500m", "memory": "1024Mi"}
    assert agent["securityContext"]["readOnlyRootFilesystem"] is True
    assert agent["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in pod["volumes"]
    config = next(v for v in pod["volumes"] if v["name"] == "config")["secret"]
    assert config["defaultMode"] == 0o440 and pod["securityContext"]["fsGroup"] == 10001  # readable by the agent only
    assert {"name": "home", "mountPath": "/den"} in agent["volumeMounts"]
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "home"
    assert sts["spec"]["template"]["metadata"]["annotations"]["den.dev/config-hash"] == \
        sts["metadata"]["labels"]["den.dev/config-hash"]

    service = await call(kube.get, f"{core('default', 'services')}/den-research-analyst")
    assert service["spec"]["ports"][0]["port"] == 8800
    policy = await call(kube.get, f"{networking('default')}/den-research-analyst")
    targets = [peer["podSelector"]["matchLabels"] for rule in policy["spec"]["egress"] for peer in rule["to"]]
    assert {"den.dev/component": "gateway"} in targets and {"den.dev/component": "egress-proxy"} in targets
    assert {} not in policy["spec"]["egress"]  # filtered: no open egress

    env = await secret_json(kube, "den-research-analyst-env", "env.json")
    assert env["SEARCH_KEY"] == "s3cret" and env["REPORT_STYLE"] == "markdown"
    assert "OPENAI_API_KEY" not in env  # provider keys are the gateway's only
    assert env["DEN_API_TOKEN"].startswith("den_")
    assert env["DEN_GATEWAY_URL"] == f"http://den-gateway.{OPERATOR_NAMESPACE}.svc:8900/v1"
    digest = hashlib.sha256(env["DEN_GATEWAY_TOKEN"].encode()).hexdigest()

    def gateway_entry():  # the gateway's Secret follows the agent's objects
        found = kube.get(f"{core(OPERATOR_NAMESPACE, 'secrets')}/den-gateway-agents")
        data = (found or {}).get("data") or {}
        return data.get("agents.json") and json.loads(base64.b64decode(data["agents.json"]))["agents"].get(digest)

    entry = await eventually(gateway_entry, timeout=30, what="the agent's gateway entry")
    assert entry["name"] == "research-analyst" and entry["model"]["name"] == "gpt-4o"
    assert await call(kube.get, f"{core('default', 'persistentvolumeclaims')}/home-den-research-analyst-0")

    starting = await eventually(lambda: (kube.get(f"{AGENT}/research-analyst").get("status") or {}).get("phase"))
    assert starting == "Starting"
    await kubelet_ready(kube, "den-research-analyst")
    ready = await eventually(lambda: condition(kube.get(f"{AGENT}/research-analyst"), "Ready").get("status") == "True"
                             and kube.get(f"{AGENT}/research-analyst"), what="Ready")
    assert ready["status"]["phase"] == "Running"
    assert ready["status"]["observedGeneration"] == 1
    assert ready["status"]["endpoint"] == "http://den-research-analyst.default.svc:8800"
    events = await call(kube.list, core("default", "events"))
    assert any(e["reason"] == "CreateContainer" and e["involvedObject"]["name"] == "research-analyst" for e in events)


async def test_a_changed_spec_rolls_the_statefulset_in_place(operator):
    kube = operator
    await call(kube.create, AGENT, resource("examples/hello/Agentfile"))
    first = await eventually(lambda: kube.get(f"{STS}/den-hello"))
    await call(kube.patch, f"{AGENT}/hello", {"spec": {"model": {"temperature": 0.9}}})

    def rolled():
        sts = kube.get(f"{STS}/den-hello")
        return sts and sts["metadata"]["labels"]["den.dev/config-hash"] != first["metadata"]["labels"]["den.dev/config-hash"] and sts
    second = await eventually(rolled, what="a new config hash")
    assert second["metadata"]["uid"] == first["metadata"]["uid"]  # patched, not replaced: the pod rolls
    assert second["spec"]["template"]["metadata"]["annotations"]["den.dev/config-hash"] == \
        second["metadata"]["labels"]["den.dev/config-hash"]
    manifest = await secret_json(kube, "den-hello-env", "agent.json")
    assert manifest["spec"]["model"]["temperature"] == 0.9
    agent = await call(kube.get, f"{AGENT}/hello")
    assert agent["metadata"]["generation"] == 2
    await eventually(lambda: (kube.get(f"{AGENT}/hello").get("status") or {}).get("observedGeneration") == 2,
                     what="observedGeneration 2")


async def test_stop_removes_the_statefulset_keeps_the_pvc_and_start_keeps_the_token(operator):
    kube = operator
    await call(kube.create, AGENT, resource("examples/hello/Agentfile"))
    await eventually(lambda: kube.get(f"{STS}/den-hello"))
    token = (await secret_json(kube, "den-hello-env", "env.json"))["DEN_API_TOKEN"]
    await call(kube.patch, f"{AGENT}/hello", {"spec": {"desiredState": "stopped"}})
    await eventually(lambda: kube.get(f"{STS}/den-hello") is None, what="the StatefulSet gone")
    stopped = await eventually(lambda: (kube.get(f"{AGENT}/hello").get("status") or {}).get("phase") == "Stopped")
    assert stopped
    assert await call(kube.get, f"{core('default', 'persistentvolumeclaims')}/home-den-hello-0")
    await call(kube.patch, f"{AGENT}/hello", {"spec": {"desiredState": "running"}})
    await eventually(lambda: kube.get(f"{STS}/den-hello"), what="the StatefulSet back")
    assert (await secret_json(kube, "den-hello-env", "env.json"))["DEN_API_TOKEN"] == token


async def test_deleting_an_agent_destroys_its_pvc_secret_and_gateway_entry(operator):
    kube = operator
    await call(kube.create, AGENT, resource("examples/hello/Agentfile"))
    await eventually(lambda: kube.get(f"{STS}/den-hello"))
    agent = await eventually(lambda: "den.dev/destroy-volume" in (kube.get(f"{AGENT}/hello")["metadata"].get("finalizers") or [])
                             and kube.get(f"{AGENT}/hello"), what="the finalizers")
    assert "den.dev/cleanup" in agent["metadata"]["finalizers"]
    await call(kube.delete, f"{AGENT}/hello")
    await eventually(lambda: kube.get(f"{AGENT}/hello") is None, what="the Agent gone")
    assert await call(kube.get, f"{core('default', 'persistentvolumeclaims')}/home-den-hello-0") is None
    assert await call(kube.get, f"{core('default', 'secrets')}/den-hello-env") is None
    assert await call(kube.get, f"{STS}/den-hello") is None
    gateway = await secret_json(kube, "den-gateway-agents", "agents.json", OPERATOR_NAMESPACE)
    assert not [e for e in gateway["agents"].values() if e["name"] == "hello"]


async def test_a_filtered_agent_gets_proxy_credentials_and_an_entry_in_the_proxy_config(operator):
    """A filtered Agent: proxy variables with its own credentials in its Secret, its user and
    allowlist in the proxy's squid.conf and passwd, the proxy Deployment rolled; deleting
    the Agent takes it out again."""
    from den.operator import htpasswd

    kube = operator
    deployments = apps(OPERATOR_NAMESPACE, "deployments")
    proxy = {"apiVersion": "apps/v1", "kind": "Deployment",  # the chart's, reduced to what the operator patches
             "metadata": {"name": "den-egress", "namespace": OPERATOR_NAMESPACE},
             "spec": {"selector": {"matchLabels": {"den.dev/component": "egress-proxy"}},
                      "template": {"metadata": {"labels": {"den.dev/component": "egress-proxy"}},
                                   "spec": {"containers": [{"name": "squid", "image": "den-egress:latest"}]}}}}
    await call(kube.create, deployments, proxy)
    body = resource("examples/hello/Agentfile", name="fetcher")
    body["spec"]["runtime"] |= {"network": "filtered", "allow": ["example.com", "*.wikipedia.org:443"]}
    await call(kube.create, AGENT, body)
    await eventually(lambda: kube.get(f"{STS}/den-fetcher"), what="the StatefulSet")

    env = await secret_json(kube, "den-fetcher-env", "env.json")
    password = env["DEN_EGRESS_TOKEN"]
    url = f"http://default.fetcher:{password}@den-egress.{OPERATOR_NAMESPACE}.svc:3128"
    assert env["HTTP_PROXY"] == env["HTTPS_PROXY"] == env["http_proxy"] == env["https_proxy"] == url
    assert env["NO_PROXY"].startswith(f"den-gateway.{OPERATOR_NAMESPACE}.svc,")
    proxy_secret = f"{core(OPERATOR_NAMESPACE, 'secrets')}/den-egress-config"

    def passwd_of(secret) -> str:
        return base64.b64decode(((secret or {}).get("data") or {}).get("passwd", "")).decode()

    def hash_of(deployment) -> str | None:
        return (((deployment or {}).get("spec", {}).get("template", {}).get("metadata") or {})
                .get("annotations") or {}).get("den.dev/config-hash")

    # The operator writes the proxy's config after the agent's own objects: wait for it.
    config = await eventually(lambda: (found := kube.get(proxy_secret)) and "default.fetcher" in passwd_of(found)
                              and found, timeout=30, what="the proxy config naming the agent")
    files = {k: base64.b64decode(v).decode() for k, v in config["data"].items()}
    user, hashed = files["passwd"].strip().split(":", 1)
    assert user == "default.fetcher" and htpasswd.verify(password, hashed) and password not in str(files)
    conf = files["squid.conf"]
    assert "acl agent0 proxy_auth default.fetcher" in conf and " src " not in conf
    assert "acl agent0_0 dstdomain -n example.com" in conf and "acl ports_443 port 443" in conf
    assert "10.0.0.0/8" in conf and "169.254.0.0/16" in conf  # DEN_EGRESS_BLOCKED + always blocked
    rolled = await eventually(lambda: hash_of(kube.get(f"{deployments}/den-egress")), timeout=30,
                              what="the proxy rolled")
    first_hash = rolled

    # the same spec again (a resync) keeps the hash: the proxy is not rolled for nothing
    await call(kube.patch, f"{AGENT}/fetcher", {"metadata": {"labels": {"team": "a"}}})
    await asyncio.sleep(1)
    again = await call(kube.get, f"{core(OPERATOR_NAMESPACE, 'secrets')}/den-egress-config")
    assert again["data"]["passwd"] == config["data"]["passwd"]

    await call(kube.delete, f"{AGENT}/fetcher")
    await eventually(lambda: kube.get(f"{AGENT}/fetcher") is None, what="the Agent gone")
    gone = await eventually(lambda: (found := kube.get(proxy_secret)) and passwd_of(found) == "" and found,
                            timeout=30, what="the agent out of the proxy config")
    assert "default.fetcher" not in base64.b64decode(gone["data"]["squid.conf"]).decode()
    await eventually(lambda: hash_of(kube.get(f"{deployments}/den-egress")) not in (None, first_hash),
                     timeout=30, what="the proxy rolled again")


async def test_a_deleted_statefulset_or_service_comes_back(operator):
    kube = operator
    await call(kube.create, AGENT, resource("examples/hello/Agentfile"))
    first = await eventually(lambda: kube.get(f"{STS}/den-hello"))
    await eventually(lambda: kube.get(f"{core('default', 'services')}/den-hello"))
    await call(kube.delete, f"{STS}/den-hello")
    back = await eventually(lambda: kube.get(f"{STS}/den-hello"), what="the StatefulSet back")
    assert back["metadata"]["uid"] != first["metadata"]["uid"]
    await call(kube.delete, f"{core('default', 'services')}/den-hello")
    await eventually(lambda: kube.get(f"{core('default', 'services')}/den-hello"), what="the Service back")


async def test_an_invalid_agent_fails_with_the_message_den_validate_prints(operator):
    kube = operator
    bad = "tests/fixtures/bad/loop-tool-not-in-tools.yaml"
    await call(kube.create, AGENT, resource(bad, name="loopy"))
    failed = await eventually(lambda: condition(kube.get(f"{AGENT}/loopy"), "Ready").get("reason") == "Invalid"
                              and kube.get(f"{AGENT}/loopy"), what="the Invalid condition")
    assert failed["status"]["phase"] == "Failed"
    validate = subprocess.run([sys.executable, "-m", "den", "validate", str(ROOT / bad)],
                              capture_output=True, text=True, timeout=60)
    assert validate.returncode != 0
    _loaded, problems = load_text((ROOT / bad).read_text(), bad)
    said = condition(failed, "Ready")["message"]
    for problem in problems:
        assert f"{problem.path}: {problem.message}" in said
        assert f"{problem.path}: {problem.message}" in validate.stdout + validate.stderr
    assert await call(kube.get, f"{STS}/den-loopy") is None


async def test_an_unresolvable_variable_leaves_the_agent_pending_with_a_condition_naming_it(operator):
    kube = operator
    body = resource("examples/hello/Agentfile")
    body["spec"]["runtime"]["env"] = {"SEARCH_API_KEY": "${NOT_IN_THE_OPERATOR_ENV}"}
    await call(kube.create, AGENT, body)
    stalled = await eventually(lambda: condition(kube.get(f"{AGENT}/hello"), "Stalled").get("reason") == "MissingVariable"
                               and kube.get(f"{AGENT}/hello"), what="the MissingVariable condition")
    message = condition(stalled, "Stalled")["message"]
    assert "NOT_IN_THE_OPERATOR_ENV" in message and "operator.envFromSecrets" in message
    assert stalled["status"]["phase"] == "Pending"
    assert await call(kube.get, f"{STS}/den-hello") is None  # nothing half-made
