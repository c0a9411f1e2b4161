"""The chart's least-privilege RBAC covers every API call the operator really makes.

The operator (kopf and Den's reconciler) runs an Agent through its whole life against kmock,
which records every request; each one must be allowed by the Roles `helm template` renders
for that namespace. Discovery URLs (/api, /apis, /version) are open to every account.
"""

from __future__ import annotations

import asyncio
import re
import subprocess

import pytest
import yaml

from den.operator.kube import Kube, agents, apps
from tests.kubernetes.conftest import OPERATOR_NAMESPACE, ROOT, eventually
from tests.kubernetes.test_operator import resource

pytestmark = pytest.mark.asyncio
PATH = re.compile(r"^/(?:api/v1|apis/(?P<group>[^/]+)/[^/]+)/namespaces/(?P<ns>[^/]+)/(?P<res>[^/]+)"
                  r"(?:/(?P<name>[^/]+)(?:/(?P<sub>[^/]+))?)?$")


def rendered_rules() -> list[tuple[str, set, set, set, set]]:
    helm = subprocess.run(["bash", str(ROOT / "hack" / "k8s-tools.sh")], capture_output=True, text=True,
                          check=True, timeout=300).stdout.strip() + "/helm"
    out = subprocess.run([helm, "template", "den", str(ROOT / "charts" / "den"), "--namespace", OPERATOR_NAMESPACE,
                          "--set", "operator.watchNamespaces={default}"],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    rules = []
    for doc in yaml.safe_load_all(out):
        if doc and doc["kind"] == "Role":
            for rule in doc["rules"]:
                rules.append((doc["metadata"]["namespace"], set(rule["apiGroups"]), set(rule["resources"]),
                              set(rule["verbs"]), set(rule.get("resourceNames") or [])))
    return rules


def what(request) -> tuple[str, str, str, str, str | None] | None:
    """(namespace, apiGroup, resource[/subresource], verb, name) of a namespaced request."""
    found = PATH.match(request.url.path)
    if not found:
        return None
    name = found["name"]
    resource_ = found["res"] + (f"/{found['sub']}" if found["sub"] else "")
    method = str(request.method.value if hasattr(request.method, "value") else request.method).upper()
    verb = {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}.get(method)
    if verb is None:
        verb = "get" if name else ("watch" if request.params.get("watch") in ("true", "1") else "list")
    return found["ns"], found["group"] or "", resource_, verb, name


async def test_every_call_of_an_agents_life_is_allowed_by_the_namespaced_roles(operator: Kube, cluster):
    test = Kube.connect(server=str(cluster.url).rstrip("/"))
    test.api_client.user_agent = "den-test"
    call = asyncio.to_thread
    await call(test.create, agents("default"), resource("examples/research-analyst/Agentfile"))
    sts = f"{apps('default', 'statefulsets')}/den-research-analyst"
    await eventually(lambda: test.get(sts), what="the StatefulSet")
    await call(test.patch, f"{sts}/status", {"status": {"readyReplicas": 1}})
    await eventually(lambda: (test.get(f"{agents('default')}/research-analyst").get("status") or {}).get("phase") == "Running")
    await call(test.patch, f"{agents('default')}/research-analyst", {"spec": {"desiredState": "stopped"}})
    await eventually(lambda: test.get(sts) is None, what="stopped")
    await call(test.delete, f"{agents('default')}/research-analyst")
    await eventually(lambda: test.get(f"{agents('default')}/research-analyst") is None, what="gone")

    rules = rendered_rules()
    calls = {what(r) for r in list(cluster) if r.headers.get("User-Agent") != "den-test"} - {None}
    assert any(c[3] == "create" and c[2] == "statefulsets" for c in calls)  # the operator's calls were seen
    refused = sorted(
        c for c in calls
        if not any(ns == c[0] and c[1] in groups and c[2] in resources_ and c[3] in verbs
                   and (not names or c[4] in names) for ns, groups, resources_, verbs, names in rules))
    assert not refused, f"calls the chart's Roles do not allow: {refused}"
    outside = {r.url.path for r in list(cluster) if r.headers.get("User-Agent") != "den-test"
               and what(r) is None and not re.match(r"^/(api|apis)(/[^/]+){0,2}$|^/version$", r.url.path)}
    assert not outside, f"cluster-scoped calls a namespaced install cannot make: {sorted(outside)}"
