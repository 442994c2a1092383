"""Schemathesis against edge-serve's published OpenAPI schema: no 5xx, no response off the schema."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from edge_runtime.serve.app import ServerConfig, create_app


@pytest.fixture(scope="module")
def api_schema(tiny_bundle, tmp_path_factory):
    from edge_runtime.control.observation import DeviceState
    from edge_runtime.control.signals import StaticSource
    from edge_runtime.runtime import Runtime

    rt = Runtime.open(tiny_bundle, signals=StaticSource(DeviceState()), threads=1, max_queue=64)
    app = create_app(ServerConfig(bundle=str(tiny_bundle), max_body_bytes=64_000), runtime=rt)
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    rt.close(grace_s=5)


schema = schemathesis.pytest.from_fixture("api_schema")
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance, content_type_conformance]


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_api_conforms(case):
    case.call_and_validate(checks=CHECKS)
