"""The KME's HTTP API (Starlette ASGI app): ETSI GS QKD 014 V1.1.1 routes over :class:`KMEService`.

Who is calling
--------------
The calling SAE is the **subject common name (CN) of the verified TLS client
certificate**, read from the ASGI TLS extension (``scope["extensions"]["tls"]
["client_cert_chain"][0]``) that :mod:`qkd.kme.server` fills in from the TLS
connection. Never from a header, path or query parameter. A request without that
extension (e.g. a server started without client-certificate checking) gets 401:
the app fails closed.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from qkd.kme._api import (
    APIError,
    BadRequest,
    Unauthorized,
    check_sae_id,
    parse_key_id,
    parse_key_ids_body,
    parse_key_request_body,
    parse_key_request_query,
)
from qkd.kme._service import KMEService

__all__ = ["caller_identity", "create_app", "openapi_document"]

_HEADERS = {"Cache-Control": "no-store"}


def create_app(service: KMEService) -> Starlette:
    """The ASGI app of one KME site."""
    limits = service.config.limits

    async def status(request: Request) -> Response:
        caller = caller_identity(request.scope)
        slave = check_sae_id(request.path_params["sae_id"], "slave_SAE_ID")
        _no_query(request)
        return _json(200, service.status(caller, slave))

    async def enc_keys(request: Request) -> Response:
        caller = caller_identity(request.scope)
        slave = check_sae_id(request.path_params["sae_id"], "slave_SAE_ID")
        if request.method == "GET":
            key_request = parse_key_request_query(request.query_params, limits)
        else:
            _no_query(request)
            key_request = parse_key_request_body(
                await _body(request, limits.max_body_bytes), limits
            )
        return _json(200, await service.enc_keys(caller, slave, key_request))

    async def dec_keys(request: Request) -> Response:
        caller = caller_identity(request.scope)
        master = check_sae_id(request.path_params["sae_id"], "master_SAE_ID")
        if request.method == "GET":
            params = request.query_params
            if set(params) != {"key_ID"} or len(params.getlist("key_ID")) != 1:
                raise BadRequest(
                    "Bad request format: GET dec_keys takes exactly one key_ID parameter"
                )
            key_ids = [parse_key_id(params["key_ID"])]
        else:
            _no_query(request)
            key_ids = parse_key_ids_body(await _body(request, limits.max_body_bytes), limits)
        return _json(200, service.dec_keys(caller, master, key_ids))

    async def follow(request: Request) -> Response:
        caller = caller_identity(request.scope)
        return _json(200, service.follow(caller, await _body(request, 1 << 20)))

    async def openapi(request: Request) -> Response:
        return Response(_openapi_bytes(), media_type="application/json", headers=_HEADERS)

    routes = [
        Route("/api/v1/keys/{sae_id}/status", status, methods=["GET"]),
        Route("/api/v1/keys/{sae_id}/enc_keys", enc_keys, methods=["GET", "POST"]),
        Route("/api/v1/keys/{sae_id}/dec_keys", dec_keys, methods=["GET", "POST"]),
        Route("/api/v1/openapi.json", openapi, methods=["GET"]),
        Route("/kme/v1/follow", follow, methods=["POST"]),
    ]
    handlers: Any = {APIError: _api_error, HTTPException: _http_error, Exception: _internal_error}
    return Starlette(routes=routes, exception_handlers=handlers)


def caller_identity(scope: Any) -> str:
    """The calling SAE: subject CN of the verified client certificate (401 if none)."""
    tls = (scope.get("extensions") or {}).get("tls") or {}
    chain = tls.get("client_cert_chain") or ()
    if not chain:
        raise Unauthorized(
            "no verified TLS client certificate on this connection; "
            "connect with the SAE's certificate issued by the KME's CA"
        )
    return _common_name(chain[0])


@functools.lru_cache(maxsize=256)
def _common_name(pem: str) -> str:
    cert = x509.load_pem_x509_certificate(pem.encode("ascii"))
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1:
        raise Unauthorized("the client certificate must carry exactly one subject CN (the SAE ID)")
    value = names[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3 document describing this API (also served at /api/v1/openapi.json)."""
    document: dict[str, Any] = json.loads(_openapi_bytes())
    return document


@functools.cache
def _openapi_bytes() -> bytes:
    return resources.files("qkd.kme").joinpath("openapi.json").read_bytes()


def _json(status: int, body: dict[str, Any]) -> Response:
    data = json.dumps(body, separators=(",", ":")).encode("ascii")
    return Response(data, status_code=status, media_type="application/json", headers=_HEADERS)


def _no_query(request: Request) -> None:
    if request.query_params:
        raise BadRequest("Bad request format: this endpoint takes no query parameters")


async def _body(request: Request, limit: int) -> object:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise BadRequest(f"Bad request format: body larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadRequest(f"Bad request format: body larger than {limit} bytes")
        chunks.append(chunk)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise BadRequest("Bad request format: send the body as Content-Type: application/json")
    try:
        return json.loads(b"".join(chunks))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadRequest("Bad request format: body is not valid JSON") from None


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    return _json(exc.status, exc.body())


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    text = {404: "no such endpoint; see /api/v1/openapi.json", 405: "method not allowed here"}
    return _json(exc.status_code, {"message": text.get(exc.status_code, str(exc.detail))})


async def _internal_error(request: Request, exc: Exception) -> Response:
    # Details stay in the server log; the body names no internals (and never key material).
    return _json(503, {"message": "Error of server side: internal error, see the KME log"})
