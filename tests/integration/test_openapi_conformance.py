"""The OpenAPI specs tell the truth: schemathesis against the live agent and gateway finds nothing.

Each operation gets a bounded number of generated requests (valid and invalid
ones), sent with the bearer token to the app served by uvicorn on 127.0.0.1;
every answer must be documented (status, content type, body schema, headers),
an invalid request must be refused with a 4xx, a token must matter, and no
request may cause a 5xx.

Generated strings hold no NUL (``allow-x00 = false``): Den refuses NUL and lone
surrogates in any string, keys included, with a 400 naming where (tested in
test_request_bounds.py), which a JSON Schema cannot say of every key of a free-form
object; with NULs, schemathesis would count those 400s as valid data refused.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.integration.conftest import AUTH, agent_resource

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance, negative_data_rejection, ignored_auth]
CONFIG = {"generation": {"allow-x00": False}}
GATEWAY_TOKEN = "dgw_conformance"
# A memory import is NDJSON: the generated value goes as text (the import must refuse or take it).
schemathesis.serializer.alias("application/x-ndjson", "text/plain")
FUZZ = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


def fuzz(url: str, headers: dict[str, str]) -> None:
    """Valid, then invalid requests to every operation of the spec served at ``url``; every
    failure of every operation is reported (each with its smallest example)."""
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json", headers=headers,
                                           config=schemathesis.Config.from_dict(CONFIG))
    failures = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert operations
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @FUZZ
            @given(case=operation.as_strategy(generation_mode=mode))
            def answer_is_documented(case: schemathesis.Case) -> None:
                case.call_and_validate(base_url=url, headers=headers, checks=CHECKS, timeout=30)

            try:
                answer_is_documented()
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE  # nothing of it can be invalid (no parameters)
            except Exception as exc:  # noqa: BLE001 (collected: every operation is tried)
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    assert not failures, "\n\n".join(failures)


@pytest.mark.slow
def test_every_answer_of_the_agent_is_in_its_openapi_spec(scripted_model, serve_runtime, tmp_path) -> None:
    agent = agent_resource(base_url=scripted_model.base_url, tools=["memo_write", "memo_search", "file_read"],
                           context_window=4096)
    fuzz(serve_runtime(agent, home=tmp_path / "home"), AUTH)


@pytest.mark.slow
def test_every_answer_of_the_gateway_is_in_its_openapi_spec(scripted_model, serve_gateway) -> None:
    gateway = serve_gateway()
    gateway.write({GATEWAY_TOKEN: {"name": "fuzzed", "model": {"provider": "openai", "name": "scripted",
                                                               "base_url": scripted_model.base_url}}})
    fuzz(gateway.url, {"Authorization": f"Bearer {GATEWAY_TOKEN}"})
