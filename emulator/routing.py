"""How an operation of the signed API is declared: `@route` on the method that answers it (the
Engine's own, or those of the mixins it inherits, such as `settlement.SettlementApi`), and the
routes a class declares (`routes_of`). Kept apart from `engine.py` so a mixin can use it."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from .validation import Obj

__all__ = ["Answer", "Ctx", "Route", "route", "routes_of"]

Answer = Callable[..., tuple[int, Obj]]
"""An Engine method answering an operation: (engine, ctx, *path parameters[, body])."""
_A = TypeVar("_A", bound=Answer)
_PLACEHOLDER = re.compile(r"\{([A-Za-z]+)\}")
_ROUTE_ATTRIBUTE = "__emulator_route__"


@dataclass(frozen=True, slots=True)
class Ctx:
    """Who is calling and where: merchant, environment (Sandbox/Live), region, simulation."""

    merchant_id: str
    environment: str = "Sandbox"
    region: str = "na"
    simulation: str | None = None
    base_url: str = "http://127.0.0.1"
    query: tuple[tuple[str, str], ...] = ()
    """The request's query parameters, in the order sent (reports and disbursements use them)."""


@dataclass(frozen=True, slots=True)
class Route:
    """Where the API answers one operation, declared on the Engine method that answers it."""

    operation: str
    """Amazon's name of the operation (``GetCharge``): what faults and simulations name."""
    method: str
    path: str
    """Under the ``/v2`` prefix, placeholders named as in Amazon's reference (``{chargeId}``)."""
    answer: Answer
    path_params: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "path_params", tuple(_PLACEHOLDER.findall(self.path)))

    def __call__(
        self, engine: object, ctx: Ctx, *, path_params: Mapping[str, str], body: Obj
    ) -> tuple[int, Obj]:
        """The `engine`'s answer: the path parameters in order, then the body (every verb but
        GET)."""
        args: list[object] = [path_params[name] for name in self.path_params]
        if self.method != "GET":
            args.append(body)
        return self.answer(engine, ctx, *args)


def route(operation: str, method: str, path: str) -> Callable[[_A], _A]:
    """Declare the method below as the answer to `operation` at `method` `path`."""

    def declare(answer: _A) -> _A:
        declared = Route(operation=operation, method=method, path=path, answer=answer)
        setattr(answer, _ROUTE_ATTRIBUTE, declared)
        return answer

    return declare


def routes_of(cls: type) -> tuple[Route, ...]:
    """Every route declared on `cls` and its bases, bases first, each in declaration order."""
    return tuple(
        declared
        for klass in reversed(cls.__mro__)
        for member in vars(klass).values()
        if (declared := getattr(member, _ROUTE_ATTRIBUTE, None)) is not None
    )
