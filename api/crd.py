"""The Agent CustomResourceDefinition, generated from the same pydantic models.

``python -m den.api.crd > crds/agents.den.dev.yaml`` (``make crds``). The
schema is made *structural* (no ``$ref``, a ``type`` on every node, no
``additionalProperties`` beside ``properties``), so Kubernetes and ``den``
reject the same bad input, as far as OpenAPI can say it; cross-field rules
(loop tools within tools, unique cron names) are checked by the operator.
"""

from __future__ import annotations

import copy
import sys
from typing import Any

from den.api.agentfile import AgentSpec
from den.api.resource import GROUP, KIND, PLURAL, SHORT_NAMES, VERSION, AgentStatus

_DROP = {"title", "examples"}


def _inline(schema: dict[str, Any], defs: dict[str, Any]) -> Any:
    """Resolve ``$ref``s and make every node structural."""
    if isinstance(schema, list):
        return [_inline(item, defs) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        target = copy.deepcopy(defs[schema["$ref"].rsplit("/", 1)[-1]])
        extra = {k: v for k, v in schema.items() if k != "$ref"}
        target.update(extra)
        return _inline(target, defs)
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _DROP or key == "$defs":
            continue
        out[key] = _inline(value, defs) if isinstance(value, dict | list) else value
    return _structural(out)


def _structural(node: dict[str, Any]) -> dict[str, Any]:
    for combinator in ("anyOf", "oneOf"):
        options = node.get(combinator)
        if not options:
            continue
        types = [o.get("type") for o in options]
        non_null = [o for o in options if o.get("type") != "null"]
        if "null" in types and len(non_null) == 1:
            node.pop(combinator)
            merged = {**non_null[0], **node}
            merged["nullable"] = True
            merged.pop("default", None) if merged.get("default") is None else None
            return merged
    for bound, limit in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(node.get(bound), int | float) and not isinstance(node[bound], bool):
            node[limit] = node.pop(bound)
            node[bound] = True
    if node.get("type") == "object" and "properties" in node:
        node.pop("additionalProperties", None)
    if "enum" in node and "type" not in node:
        node["type"] = "string"
    if "const" in node:
        node["enum"] = [node.pop("const")]
    return node


def _memory_field(spec: dict[str, Any]) -> None:
    memory = spec["properties"]["runtime"]["properties"]["memory"]
    description = memory.get("description", "")
    spec["properties"]["runtime"]["properties"]["memory"] = {
        "x-kubernetes-int-or-string": True,
        "description": description,
        "default": memory.get("default", 512),
        "pattern": r"^\s*\d+(\.\d+)?\s*([kKmMgGtT][iI]?[bB]?|[bB])?\s*$",
    }


def spec_schema() -> dict[str, Any]:
    raw = AgentSpec.model_json_schema(mode="validation")
    spec = _inline(raw, raw.get("$defs", {}))
    _memory_field(spec)
    spec["properties"]["desiredState"]["enum"] = ["running", "stopped"]
    spec["properties"]["desiredState"].pop("pattern", None)
    return spec


def status_schema() -> dict[str, Any]:
    raw = AgentStatus.model_json_schema(mode="validation")
    status = _inline(raw, raw.get("$defs", {}))
    return status


def crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": KIND.lower(),
                "shortNames": SHORT_NAMES,
                "categories": ["all", "den"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                        {"name": "Model", "type": "string", "jsonPath": ".spec.model.name"},
                        {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint"},
                        {"name": "Next Run", "type": "string", "jsonPath": ".status.nextRun"},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "An AI agent with a home: model, identity, memory, tools, "
                            "checks, loops, cron, limits and network policy.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema(),
                                "status": status_schema(),
                            },
                        }
                    },
                }
            ],
        },
    }


def render() -> str:
    from den.api.loader import dump_yaml

    header = "# Generated by `make crds` from den.api (pydantic models). Do not edit.\n"
    return header + dump_yaml(crd())


if __name__ == "__main__":
    sys.stdout.write(render())
