"""Amazon Pay played by a `MockTransport` handler, for unit tests of the logic above the client.

The real `AmazonPayClient` signs every request; `Amazon` checks each signature against the test
key (a bad one gets Amazon's 401, as the real service answers), names the `ENDPOINTS` row the
request is for, records it, and answers with what the test registered for that operation.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from service.amazonpay import (
    ENDPOINTS,
    AmazonPayRequestError,
    HttpRequest,
    HttpResponse,
    MerchantAccount,
    PrivateKey,
    canonical_request,
    parse_authorization_header,
    verify_signature,
)

VECTORS = Path(__file__).resolve().parent / "data" / "signing-vectors"
PRIVATE_KEY = PrivateKey.from_file(VECTORS / "test-key-private.pem")
PUBLIC_PEM = (VECTORS / "test-key-public.pem").read_bytes()
ENDPOINT = "https://pay-api.amazon.test"
"""Never resolved: a `MockTransport` sends nothing."""

_ROUTES = [
    (re.compile("^" + re.sub(r"\{[A-Za-z]+\}", "([^/]+)", row.path) + "$"), row.method, name)
    for name, row in ENDPOINTS.items()
]


def _operation_of(method: str, path: str) -> tuple[str, tuple[str, ...]] | None:
    """The `ENDPOINTS` row a request is for, and the ids in its path."""
    for pattern, row_method, name in _ROUTES:
        match = pattern.match(path)
        if match is not None and row_method == method:
            return name, match.groups()
    return None


def account(public_key_id: str = "AHMOCKKEY0000000000000") -> MerchantAccount:
    """A sandbox account signing with the test key (a `LIVE-` key id makes it live)."""
    return MerchantAccount(public_key_id=public_key_id, private_key=PRIVATE_KEY, endpoint=ENDPOINT)


@dataclass(frozen=True)
class Call:
    """One request Amazon received."""

    operation: str
    """The `ENDPOINTS` row it is for."""
    path_ids: tuple[str, ...]
    """The ids in its path (`chargeId` ...), in order."""
    idempotency_key: str | None
    simulation_code: str | None
    body: dict[str, Any]


Route = Callable[[Call], HttpResponse]


def answer(status: int, body: Mapping[str, Any], *, request_id: str | None = None) -> HttpResponse:
    """An Amazon answer with a JSON body and its `x-amz-pay-request-id`."""
    headers = {"content-type": "application/json"}
    if request_id is not None:
        headers["x-amz-pay-request-id"] = request_id
    return HttpResponse.build(status, headers, json.dumps(body).encode())


def refusal(status: int, reason_code: str, *, request_id: str | None = None) -> HttpResponse:
    """An Amazon error answer (`{"reasonCode", "message"}`)."""
    body = {"reasonCode": reason_code, "message": f"refused: {reason_code}"}
    return answer(status, body, request_id=request_id)


def signature_holds(request: HttpRequest) -> bool:
    """Whether `request` carries a valid signature of the test key over what it sends."""
    try:
        auth = parse_authorization_header(request.headers.get("authorization", ""))
    except AmazonPayRequestError:
        return False
    url = urlsplit(request.url)
    signed = {name: request.headers.get(name, "") for name in auth.signed_headers}
    canonical = canonical_request(
        request.method,
        url.path,
        parse_qsl(url.query, keep_blank_values=True),
        signed,
        request.body,
        path_is_canonical=True,
    )
    return verify_signature(
        PUBLIC_PEM, canonical.string_to_sign(auth.algorithm), auth.signature, auth.algorithm
    )


class Amazon:
    """The `MockTransport` handler: `amazon.on("CreateCharge", route)` answers that operation."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._routes: dict[str, Route] = {}
        self._request_ids = itertools.count(1)

    def on(self, operation: str, route: Route) -> None:
        self._routes[operation] = route

    def calls_to(self, operation: str) -> list[Call]:
        return [call for call in self.calls if call.operation == operation]

    def request_id(self) -> str:
        """A fresh `x-amz-pay-request-id`."""
        return f"amzn-request-{next(self._request_ids)}"

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not signature_holds(request):
            return refusal(401, "InvalidRequestSignature")
        found = _operation_of(request.method, urlsplit(request.url).path.split("/v2", 1)[1])
        if found is None:
            return refusal(404, "ResourceNotFound")
        operation, path_ids = found
        call = Call(
            operation=operation,
            path_ids=path_ids,
            idempotency_key=request.headers.get("x-amz-pay-idempotency-key"),
            simulation_code=request.headers.get("x-amz-pay-simulation-code"),
            body=json.loads(request.body) if request.body else {},
        )
        self.calls.append(call)
        route = self._routes.get(operation)
        if route is None:
            return refusal(404, "ResourceNotFound")
        return route(call)
