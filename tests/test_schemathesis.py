"""Schemathesis against the admin API's own OpenAPI document, in process, with the admin token.

Every operation gets generated requests, valid and invalid; no answer may be a 5xx, and every answer must
match the documented status codes, content type and response schema. The upstream is the simulator, so
``/reconcile`` runs for real. Bounded so the whole module finishes in well under a minute.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from kling_budget.server.openapi import openapi_document
from kling_budget.simulator import SimulatorConfig, running_simulator
from tests.admin_support import auth, make_app, make_state, seed, without_lifespan

# More examples, or a random seed (derandomize off), for an exploratory run: the CI run stays repeatable.
EXAMPLES = int(os.environ.get("KLING_BUDGET_TEST_SCHEMATHESIS_EXAMPLES", "20"))
DERANDOMIZE = not os.environ.get("KLING_BUDGET_TEST_SCHEMATHESIS_RANDOM")

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@pytest.fixture(scope="module")
def admin_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The admin API's schema, loaded from a seeded gateway app."""
    with running_simulator(SimulatorConfig.single()) as kling:
        state = make_state(Path(tmp_path_factory.mktemp("schemathesis")), kling=kling)
        seed(state)
        state.keys.create("existing-key", project="marketing")
        yield schemathesis.openapi.from_asgi("/admin/api/openapi.json", without_lifespan(make_app(state)))
        state.tracker.close()


def _auth_for(case: Any) -> dict[str, str]:
    """The admin token, unless this case deliberately breaks the Authorization header (then: expect 401)."""
    header = case.meta.components.get(ParameterLocation.HEADER) if case.meta else None
    return {} if header is not None and header.mode is GenerationMode.NEGATIVE else auth()


OPERATIONS = [
    (method.upper(), path, "parameters" in item or "parameters" in operation or "requestBody" in operation)
    for path, item in openapi_document()["paths"].items()
    for method, operation in item.items()
    if method != "parameters"
]


@pytest.mark.parametrize(("method", "path", "has_input"), OPERATIONS, ids=[f"{m} {p}" for m, p, _ in OPERATIONS])
def test_admin_api_conforms_to_its_openapi(admin_schema: Any, method: str, path: str, has_input: bool) -> None:
    """No 5xx, and every answer to valid and (where there is input to break) invalid requests is documented
    and matches its schema."""
    operation = admin_schema[path][method]
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if has_input else (GenerationMode.POSITIVE,):

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=DERANDOMIZE,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Any) -> None:
            case.call_and_validate(headers=_auth_for(case), checks=CHECKS)

        check()
