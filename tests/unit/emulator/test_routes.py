"""The emulator's routes: each declared on the Engine method that answers it, and the same
operations at the same verbs and paths as the service's endpoint table."""

from __future__ import annotations

import inspect
from collections import Counter

from emulator.engine import ROUTES, Engine
from service.amazonpay import ENDPOINTS


def test_every_route_is_answered_by_an_engine_method_taking_its_parameters() -> None:
    for route in ROUTES:
        assert getattr(Engine, route.answer.__name__) is route.answer, route.operation
        parameters = list(inspect.signature(route.answer).parameters)
        body = ["raw"] if route.method != "GET" else []
        assert len(parameters) == 2 + len(route.path_params) + len(body), route.operation
        assert parameters[:2] == ["self", "ctx"], route.operation
        assert parameters[2 + len(route.path_params) :] == body, route.operation


def test_no_operation_or_path_is_declared_twice() -> None:
    assert Counter(route.operation for route in ROUTES).most_common(1)[0][1] == 1
    assert len({(route.method, route.path) for route in ROUTES}) == len(ROUTES)


def test_the_emulator_answers_every_endpoint_of_the_service_where_it_sends_it() -> None:
    emulated = {route.operation: (route.method, route.path) for route in ROUTES}
    sent = {name: (row.method, row.path) for name, row in ENDPOINTS.items()}
    assert emulated == sent
