"""What Den puts on a cluster validates against Kubernetes' own schemas (1.33), offline.

Objects the KubernetesBackend renders for every example, the CRD, and the Helm chart rendered
with default and non-default values go through ``kubernetes-validate`` (strict: unknown fields
are errors); ``helm lint`` passes. helm comes from hack/k8s-tools.sh (cached in .den-build/).
The bad-Agentfile corpus is refused by the CRD's schema or by the operator's own validation.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from den.api.loader import YamlLoader, load_paths, load_text
from den.operator import kubernetes_render as render
from den.operator.htpasswd import md5_crypt
from den.operator.kopf_operator import validation_problems
from den.operator.plan import AgentSecrets, Observed, desired_container

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "den"
K8S_VERSION = "1.33.0"
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*/Agentfile"))
BAD = sorted((ROOT / "tests" / "fixtures" / "bad").glob("*.yaml"))


@pytest.fixture(scope="module")
def helm() -> str:
    folder = subprocess.run(["bash", str(ROOT / "hack" / "k8s-tools.sh")], capture_output=True,
                            text=True, check=True, timeout=300).stdout.strip()
    return f"{folder}/helm"


def valid(obj: dict) -> None:
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def rendered(agentfile: Path) -> list[dict]:
    agent = load_paths([agentfile])[0].agent
    agent.metadata.uid = "0b7c6f7e-0000-4000-8000-000000000001"
    observed = Observed(image_id=agent.spec.runtime.base)
    secrets = AgentSecrets({"DEN_API_TOKEN": "den_x", "DEN_GATEWAY_TOKEN": "dengw_y"})
    desired = desired_container(agent, observed, 8800, secrets)
    clients = {render.egress_user(agent): {"agent": f"{agent.namespace}/{agent.name}", "hash": md5_crypt("pw"),
                                           "allow": list(agent.spec.runtime.allow)}}
    return [*render.agent_objects(desired, agent, "den-system"), render.pvc(desired, agent),
            render.gateway_agents_secret("den-system", {"agents": {}}),
            render.egress_config_secret("den-system", clients, ["10.0.0.0/8"])]


@pytest.mark.parametrize("agentfile", EXAMPLES, ids=lambda p: p.parent.name)
def test_every_object_rendered_for_an_example_is_valid_kubernetes(agentfile: Path) -> None:
    objects = rendered(agentfile)
    assert {o["kind"] for o in objects} == {"Secret", "Service", "NetworkPolicy", "StatefulSet",
                                            "PersistentVolumeClaim"}
    for obj in objects:
        valid(obj)


def test_network_policies_follow_runtime_network() -> None:
    hello = load_paths([ROOT / "examples" / "hello" / "Agentfile"])[0].agent  # network: host
    policies = {}
    for mode in ("none", "filtered", "host"):
        agent = hello.model_copy(deep=True)
        agent.spec.runtime.network = mode
        desired = desired_container(agent, Observed(image_id="x"), 8800)
        policies[mode] = render.network_policy(desired, agent, "den-system")["spec"]
    assert policies["host"]["egress"] == [{}]
    to = {mode: [peer["podSelector"]["matchLabels"] for rule in p["egress"] for peer in rule.get("to", [])]
          for mode, p in policies.items()}
    assert {"den.dev/component": "gateway"} in to["none"]
    assert {"den.dev/component": "egress-proxy"} not in to["none"]
    assert {"den.dev/component": "egress-proxy"} in to["filtered"]
    for spec in policies.values():  # ingress only from the operator's namespace and labelled clients
        peers = spec["ingress"][0]["from"]
        assert {"podSelector": {"matchLabels": {"den.dev/client": "true"}}} in peers
        assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "den-system"}}} in peers


def test_the_egress_config_secret_holds_squid_conf_and_hashes_never_passwords() -> None:
    agent = load_paths([ROOT / "examples" / "research-analyst" / "Agentfile"])[0].agent  # filtered
    password = "the-agents-own-token"
    env = render.proxy_environment("den-system", render.egress_user(agent), password)
    assert env["HTTPS_PROXY"] == f"http://default.research-analyst:{password}@den-egress.den-system.svc:3128"
    assert env["no_proxy"].split(",")[0] == "den-gateway.den-system.svc"  # the gateway is not proxied
    clients = {"default.research-analyst": {"agent": "default/research-analyst", "hash": md5_crypt(password),
                                            "allow": list(agent.spec.runtime.allow)}}
    secret = render.egress_config_secret("den-system", clients, ["10.0.0.0/8"])
    valid(secret)
    files = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert password not in "".join(files.values())
    assert files["passwd"] == f"default.research-analyst:{clients['default.research-analyst']['hash']}\n"
    assert "auth_param basic program /usr/lib/squid/basic_ncsa_auth /etc/den-egress/passwd" in files["squid.conf"]
    assert "acl agent0 proxy_auth default.research-analyst" in files["squid.conf"]
    assert "10.0.0.0/8" in files["squid.conf"] and "169.254.0.0/16" in files["squid.conf"]
    same = render.egress_config_secret("den-system", json.loads(files["clients.json"]), ["10.0.0.0/8"])
    assert render.egress_config_hash(same) == render.egress_config_hash(secret)  # stable: no needless roll
    other = render.egress_config_secret("den-system", {}, ["10.0.0.0/8"])
    assert render.egress_config_hash(other) != render.egress_config_hash(secret)
    patch = render.egress_restart_patch(render.egress_config_hash(secret))
    assert patch["spec"]["template"]["metadata"]["annotations"]["den.dev/config-hash"]


def test_the_chart_deploys_a_hardened_egress_proxy_the_filtered_policy_lets_agents_reach(helm: str) -> None:
    objects = template(helm)
    proxy = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "den-egress")
    pod = proxy["spec"]["template"]["spec"]
    squid = pod["containers"][0]
    assert squid["image"] == "den-egress:latest"
    assert squid["securityContext"]["readOnlyRootFilesystem"] is True
    assert squid["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10002
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    config = next(v for v in pod["volumes"] if v["name"] == "config")["secret"]
    assert config["secretName"] == render.EGRESS_CONFIG_SECRET
    service = next(o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == "den-egress")
    assert service["spec"]["ports"][0]["port"] == 3128
    # the pods the filtered NetworkPolicy allows are these, in the release namespace
    agent = load_paths([ROOT / "examples" / "research-analyst" / "Agentfile"])[0].agent
    policy = render.network_policy(desired_container(agent, Observed(image_id="x"), 8800), agent, "den-system")
    peers = [peer for rule in policy["spec"]["egress"] for peer in rule["to"]
             if peer["podSelector"]["matchLabels"].get("den.dev/component") == "egress-proxy"]
    assert peers and all(proxy["spec"]["template"]["metadata"]["labels"][k] == v
                         for k, v in peers[0]["podSelector"]["matchLabels"].items())
    assert peers[0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] == proxy["metadata"]["namespace"]
    operator = next(o for o in objects if o["kind"] == "Deployment" and "operator" in o["metadata"]["name"])
    env = {e["name"]: e.get("value") for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "10.0.0.0/8" in env["DEN_EGRESS_BLOCKED"].split(",")

    without = template(helm, "egress.enabled=false", "egress.blockedDestinations={10.96.0.0/12}")
    for obj in without:
        valid(obj)
    assert not [o for o in without if o["metadata"]["name"] == "den-egress"]
    operator = next(o for o in without if o["kind"] == "Deployment" and "operator" in o["metadata"]["name"])
    env = {e["name"]: e.get("value") for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["DEN_EGRESS_BLOCKED"] == "10.96.0.0/12"


def test_the_crd_is_valid_and_the_chart_carries_the_same_one() -> None:
    crd = yaml.safe_load((ROOT / "crds" / "agents.den.dev.yaml").read_text())
    valid(crd)
    assert (CHART / "crds" / "agents.den.dev.yaml").read_text() == (ROOT / "crds" / "agents.den.dev.yaml").read_text()


def test_helm_lint_passes(helm: str) -> None:
    result = subprocess.run([helm, "lint", "--strict", str(CHART)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def template(helm: str, *sets: str) -> list[dict]:
    args = [helm, "template", "den", str(CHART), "--namespace", "den-system", "--include-crds"]
    for value in sets:
        args += ["--set", value]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=120).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def operator_image_cmd() -> list[str]:
    """The CMD of runtime/Dockerfile's operator stage (the den-operator image)."""
    stage = (ROOT / "runtime" / "Dockerfile").read_text().split("AS operator\n", 1)[1]
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", stage, re.M).group(1))
    assert cmd == ["den", "operator", "run", "--kubernetes"]
    return cmd


def test_the_chart_with_default_values_is_namespaced_least_privilege(helm: str) -> None:
    objects = template(helm)
    for obj in objects:
        valid(obj)
    kinds = [o["kind"] for o in objects]
    assert "ClusterRole" not in kinds and "ClusterRoleBinding" not in kinds
    assert {"CustomResourceDefinition", "Deployment", "Service", "ServiceAccount", "Role"} <= set(kinds)
    operator = next(o for o in objects if o["kind"] == "Deployment" and "operator" in o["metadata"]["name"])
    container = operator["spec"]["template"]["spec"]["containers"][0]
    assert "command" not in container  # the image's entry point (tini) stays PID 1
    assert container["args"] == [*operator_image_cmd(), "--namespace=den-system"]


def test_the_chart_with_other_values_is_valid_and_keeps_provider_keys_in_the_gateway(helm: str) -> None:
    cluster = template(helm, "operator.clusterWide=true", "gateway.providerKeySecrets={keys}",
                       "operator.envFromSecrets={agent-env}", "operator.image.tag=v1",
                       "operator.nodeSelector.pool=agents", "gateway.port=9000")
    for obj in cluster:
        valid(obj)
    assert "ClusterRole" in [o["kind"] for o in cluster]
    deployments = {o["metadata"]["name"]: o["spec"]["template"]["spec"] for o in cluster if o["kind"] == "Deployment"}
    gateway, operator = deployments["den-gateway"], deployments["den-den-operator"]
    assert gateway["containers"][0]["envFrom"] == [{"secretRef": {"name": "keys"}}]
    assert operator["containers"][0]["envFrom"] == [{"secretRef": {"name": "agent-env"}}]
    assert operator["containers"][0]["args"] == operator_image_cmd()  # every namespace
    # The ledger: a PVC by default (budgets survive the pod moving), an emptyDir when asked.
    claims = {o["metadata"]["name"]: o for o in cluster if o["kind"] == "PersistentVolumeClaim"}
    assert claims["den-gateway-data"]["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert "storageClassName" not in claims["den-gateway-data"]["spec"]
    data = next(v for v in gateway["volumes"] if v["name"] == "data")
    assert data == {"name": "data", "persistentVolumeClaim": {"claimName": "den-gateway-data"}}
    fast = template(helm, "gateway.persistence.storageClass=fast", "gateway.persistence.size=5Gi")
    claim = next(o for o in fast if o["kind"] == "PersistentVolumeClaim")
    valid(claim)
    assert claim["spec"]["storageClassName"] == "fast" and claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    ephemeral = template(helm, "gateway.persistence.enabled=false")
    assert "PersistentVolumeClaim" not in [o["kind"] for o in ephemeral]
    spec = next(o for o in ephemeral if o["metadata"]["name"] == "den-gateway" and o["kind"] == "Deployment")
    assert {"name": "data", "emptyDir": {}} in spec["spec"]["template"]["spec"]["volumes"]
    namespaced = template(helm, "operator.watchNamespaces={team-a,team-b}")
    roles = sorted(o["metadata"]["namespace"] for o in namespaced if o["kind"] == "Role")
    assert roles == ["den-system", "team-a", "team-b"]  # the gateway Secret's Role, one per watched namespace


def _values(node: dict, prefix: str = "") -> list[str]:
    found = []
    for key, value in node.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and key != "resources":
            found += _values(value, path + ".")
        else:
            found.append(path)
    return found


def test_the_chart_readme_lists_every_value() -> None:
    readme = (CHART / "README.md").read_text()
    values = _values(yaml.safe_load((CHART / "values.yaml").read_text()))
    assert values
    missing = [v for v in values if f"`{v}`" not in readme]
    assert not missing, f"charts/den/README.md does not list: {missing}"


def as_resource(path: Path) -> dict | None:
    """A corpus file as the Agent resource kubectl would send (None: kubectl cannot parse it)."""
    _loaded, problems = load_text(path.read_text(), path.name)
    if any(p.message == "duplicate key" for p in problems):
        return None  # kubectl's YAML reader refuses duplicate keys too
    try:
        doc = yaml.load(path.read_text(), Loader=YamlLoader)
    except yaml.YAMLError:
        return None
    if not isinstance(doc, dict):
        return None
    if doc.get("kind") == "Agent":
        return doc
    meta = {k: doc.pop(k) for k in ("name", "namespace", "labels", "annotations") if k in doc}
    return {"apiVersion": "den.dev/v1alpha1", "kind": "Agent", "metadata": meta, "spec": doc}


def test_the_bad_corpus_is_refused_by_the_crd_schema_or_the_operator() -> None:
    crd = yaml.safe_load((ROOT / "crds" / "agents.den.dev.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    by_schema, by_operator, by_parser = [], [], []
    for path in BAD:
        obj = as_resource(path)
        if obj is None:
            by_parser.append(path.name)
            continue
        name = obj.get("metadata", {}).get("name")
        if not isinstance(name, str) or not name:
            by_schema.append(path.name)  # the API server requires metadata.name
            continue
        if set(obj) - {"apiVersion", "kind", "metadata", "spec"}:
            by_schema.append(path.name)  # kubectl's default --validate=strict refuses unknown fields
            continue
        if list(jsonschema.Draft7Validator(schema).iter_errors(obj)):
            by_schema.append(path.name)
            continue
        assert validation_problems(obj, path.name), f"{path.name} would be silently accepted"
        by_operator.append(path.name)
    assert len(by_schema) >= 10, by_schema  # structural checks live in the CRD itself
    assert by_operator  # cross-field rules: the operator's Failed status
