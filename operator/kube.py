"""A thin Kubernetes API client: paths, JSON and merge patches, nothing else.

The KubernetesBackend, the Agent store adapter and ``den --context`` talk to
the API server through this one class. It borrows authentication from the
official client (kubeconfig as kubectl reads it, or the in-cluster service
account) and sends plain requests, so the objects it writes are exactly the
dicts :mod:`den.operator.kubernetes_render` makes. Only merge patches are
used (``application/merge-patch+json``): they work the same on every API
server and on kmock. ``kubernetes`` is imported lazily (the CLI stays fast).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any, NoReturn

from den.api.errors import AlreadyExists, BackendUnavailable, Conflict, DenError, NotFound

#: Where in-cluster service-account files are (the operator's own namespace is there too).
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


class KubeError(DenError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"Kubernetes API: {status} {message}")
        self.status = status


def operator_namespace() -> str:
    """The namespace the operator (and the model gateway) run in: ``DEN_OPERATOR_NAMESPACE``,
    else the service account's, else ``den-system``."""
    if os.environ.get("DEN_OPERATOR_NAMESPACE"):
        return os.environ["DEN_OPERATOR_NAMESPACE"]
    try:
        with open(f"{SERVICE_ACCOUNT_DIR}/namespace") as handle:
            return handle.read().strip()
    except OSError:
        return "den-system"


class Kube:
    """Requests to one API server, authenticated like kubectl (or in-cluster)."""

    def __init__(self, api_client: Any, context: str | None = None) -> None:
        self.api_client = api_client
        #: The kubeconfig context it was made from (None: a plain URL or in-cluster).
        self.context = context

    @classmethod
    def connect(cls, *, context: str | None = None, server: str | None = None) -> Kube:
        """``server`` (a plain URL, no auth: kmock) or kubeconfig ``context`` or in-cluster."""
        from kubernetes import client, config

        if server:
            configuration = client.Configuration()
            configuration.host = server.rstrip("/")
            return cls(client.ApiClient(configuration))
        configuration = client.Configuration()
        try:
            if context is None and os.path.exists(f"{SERVICE_ACCOUNT_DIR}/token"):
                config.load_incluster_config(client_configuration=configuration)
            else:
                config.load_kube_config(context=context, client_configuration=configuration)
        except Exception as exc:  # ConfigException, missing file, unknown context
            raise BackendUnavailable(f"cannot load Kubernetes credentials: {exc}",
                                     hint="check `kubectl config get-contexts` and KUBECONFIG") from None
        return cls(client.ApiClient(configuration), context)

    @property
    def server(self) -> str:
        return self.api_client.configuration.host

    def request(self, method: str, path: str, body: Any = None, *,
                query: dict[str, str] | None = None, content_type: str = "application/json") -> Any:
        from kubernetes.client.exceptions import ApiException

        try:
            method_, url, headers, payload, post = self.api_client.param_serialize(
                method, path, query_params=list((query or {}).items()),
                header_params={"Content-Type": content_type, "Accept": "application/json"},
                body=body, auth_settings=["BearerToken"],
            )
            response = self.api_client.call_api(method_, url, header_params=headers, body=payload,
                                                post_params=post, _request_timeout=30)
            response.read()
            status, data = response.status, response.data
        except ApiException as exc:
            status, data = exc.status or 0, (exc.body or b"")
        except Exception as exc:  # refused, DNS, TLS: urllib3's errors
            raise BackendUnavailable(f"cannot reach the Kubernetes API at {self.server}: {exc}") from None
        if status >= 400:
            _fail(method, path, status, data)
        return json.loads(data) if data else None

    def raw(self, path: str, query: dict[str, str] | None = None) -> bytes:
        """A GET whose answer is not JSON (pod logs)."""
        return b"".join(self.stream(path, query, timeout=30))

    def stream(self, path: str, query: dict[str, str] | None = None, *,
               timeout: float | None = None) -> Iterator[bytes]:
        """A GET whose answer is not JSON, chunk by chunk as the server sends it (``follow``
        logs); ``timeout`` None waits as long as the server keeps the answer open."""
        from kubernetes.client.exceptions import ApiException

        method_, url, headers, _payload, _post = self.api_client.param_serialize(
            "GET", path, query_params=list((query or {}).items()), auth_settings=["BearerToken"])
        try:
            response = self.api_client.call_api(method_, url, header_params=headers, _request_timeout=timeout)
        except ApiException as exc:
            _fail("GET", path, exc.status or 0, exc.body or b"")
        except Exception as exc:  # refused, DNS, TLS: urllib3's errors
            raise BackendUnavailable(f"cannot reach the Kubernetes API at {self.server}: {exc}") from None
        if response.status >= 400:
            response.read()
            _fail("GET", path, response.status, response.data)
        body = response.response  # urllib3's, unread (the client never preloads)
        yield from body.stream(None if body.chunked else 1024)

    # -- verbs ------------------------------------------------------------------

    def get(self, path: str) -> dict | None:
        """The object at ``path``, or None when there is none."""
        try:
            return self.request("GET", path)
        except NotFound:
            return None

    def list(self, path: str, labels: dict[str, str] | None = None) -> list[dict]:
        """Objects at a collection ``path``; the label selector is also checked here (some
        servers, such as test emulators, ignore it)."""
        query = {"labelSelector": ",".join(f"{k}={v}" for k, v in labels.items())} if labels else None
        items = (self.request("GET", path, query=query) or {}).get("items", [])
        if labels:
            items = [i for i in items
                     if all((i.get("metadata", {}).get("labels") or {}).get(k) == v for k, v in labels.items())]
        return items

    def create(self, path: str, body: dict) -> dict:
        return self.request("POST", path, body)

    def patch(self, path: str, body: dict) -> dict:
        return self.request("PATCH", path, body, content_type="application/merge-patch+json")

    def delete(self, path: str, *, propagation: str = "Background") -> bool:
        """Delete; False when it was already gone."""
        try:
            self.request("DELETE", path, {"propagationPolicy": propagation})
            return True
        except NotFound:
            return False

    def apply(self, collection: str, body: dict) -> dict:
        """Create, or merge-patch what exists (labels, annotations and spec converge)."""
        name = body["metadata"]["name"]
        try:
            return self.create(collection, body)
        except AlreadyExists:
            return self.patch(f"{collection}/{name}", body)


def _fail(method: str, path: str, status: int, data: Any) -> NoReturn:
    """Raise the error an API answer of ``status`` >= 400 means (its message, one line)."""
    message = data.decode(errors="replace") if isinstance(data, bytes) else str(data)
    try:
        message = json.loads(message).get("message") or message
    except (ValueError, AttributeError):
        pass
    message = message.splitlines()[0] if message else ""
    if status == 404:
        raise NotFound(f"{path}: {message}")
    if status == 409:
        raise (AlreadyExists if method == "POST" else Conflict)(f"{path}: {message}")
    raise KubeError(status, f"{method} {path}: {message}")


def core(namespace: str, plural: str) -> str:
    return f"/api/v1/namespaces/{namespace}/{plural}"


def apps(namespace: str, plural: str) -> str:
    return f"/apis/apps/v1/namespaces/{namespace}/{plural}"


def networking(namespace: str) -> str:
    return f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies"


def agents(namespace: str | None = None) -> str:
    from den.api.resource import GROUP, PLURAL, VERSION

    if namespace is None:
        return f"/apis/{GROUP}/{VERSION}/{PLURAL}"
    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
