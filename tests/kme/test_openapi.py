"""The live KME (HTTPS, mutual TLS) against its own OpenAPI document, with schemathesis."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi import checks as oa_checks

from qkd.kme import KMEPair, openapi_document
from tests.kme.conftest import Certs


def _deployment_document() -> dict[str, Any]:
    """The served document, with SAE IDs narrowed to the ones this test deployment knows."""
    doc = copy.deepcopy(openapi_document())
    for item in doc["paths"].values():
        for operation in item.values():
            for parameter in operation["parameters"]:
                if parameter["name"] == "SAE_ID":
                    parameter["schema"] = {"type": "string", "enum": ["bob"]}
    return doc


schema = schemathesis.openapi.from_dict(_deployment_document())

CHECKS = [
    oa_checks.status_code_conformance,
    oa_checks.content_type_conformance,
    oa_checks.response_schema_conformance,
    oa_checks.negative_data_rejection,
]


@pytest.fixture(scope="module")
def session(kme_pair: KMEPair, certs: Certs) -> Iterator[tuple[str, requests.Session, Any]]:
    alice = certs.pair.saes["alice"]
    with requests.Session() as s:
        s.trust_env = False  # else REQUESTS_CA_BUNDLE from the environment overrides verify
        yield (
            kme_pair.server_a.url,
            s,
            {"verify": alice.ca_file, "cert": (alice.cert_file, alice.key_file)},
        )


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_openapi(case: Any, session: tuple[str, requests.Session, Any]) -> None:
    base_url, http, tls = session
    response = case.call(base_url=base_url, session=http, **tls)
    # 405: schemathesis also tries undocumented methods (TRACE, DELETE, ...)
    assert response.status_code in {200, 400, 401, 405, 503}, response.text
    assert "message" in response.json() or response.status_code == 200
    case.validate_response(response, checks=CHECKS)


def test_openapi_document_is_served(kme_pair: KMEPair, certs: Certs) -> None:
    alice = certs.pair.saes["alice"]
    with requests.Session() as http:
        http.trust_env = False
        response = http.get(
            f"{kme_pair.server_a.url}/api/v1/openapi.json",
            verify=alice.ca_file,
            cert=(alice.cert_file, alice.key_file),
            timeout=10,
        )
    assert response.json() == openapi_document()
