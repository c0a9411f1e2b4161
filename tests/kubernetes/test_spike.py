import pytest

from tests.kubernetes.conftest import eventually

pytestmark = pytest.mark.asyncio


async def test_spike(operator, cluster):
    body = {"apiVersion": "den.dev/v1alpha1", "kind": "Agent",
            "metadata": {"name": "hello", "namespace": "default"},
            "spec": {"model": {"provider": "openai", "name": "gpt-4o-mini"}}}
    import asyncio
    await asyncio.to_thread(operator.create, "/apis/den.dev/v1alpha1/namespaces/default/agents", body)
    sts = await eventually(lambda: operator.get("/apis/apps/v1/namespaces/default/statefulsets/den-hello"))
    print(sts)
    agent = await eventually(lambda: (operator.get("/apis/den.dev/v1alpha1/namespaces/default/agents/hello").get("status") or {}).get("phase"))
    print(agent)


async def test_spike2(operator, cluster):
    import asyncio
    body = {"apiVersion": "den.dev/v1alpha1", "kind": "Agent",
            "metadata": {"name": "hello", "namespace": "default"},
            "spec": {"model": {"provider": "openai", "name": "gpt-4o-mini"}}}
    await asyncio.to_thread(operator.create, "/apis/den.dev/v1alpha1/namespaces/default/agents", body)
    await asyncio.sleep(2)
    for r in cluster.requests:
        if r.method != "GET":
            print(r.method, r.url.path, str(r.data)[:300])
