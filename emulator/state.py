"""The emulator's process-wide state and the small helpers both its API and its control plane use.

`app` (the signed Amazon Pay API) and `control` (the `/_emulator/` plane) both import from here,
never from each other.
"""

from __future__ import annotations

import asyncio
import html
import json
import os
import uuid
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from . import signing
from .clock import Clock
from .engine import Engine
from .ipn import IpnDispatcher
from .validation import ApiError, Obj

DEFAULT_MERCHANT_ID = "A2EMULATORMERCHANT"
JSON_TYPE = "application/json"


@dataclass
class EmulatorConfig:
    """Everything `create_app` needs; the CLI fills it from flags."""

    keys: dict[str, str] = field(default_factory=dict)
    """publicKeyId -> PEM text."""
    ipn_urls: list[str] = field(default_factory=list)
    state_file: Path | None = None
    merchant_id: str = DEFAULT_MERCHANT_ID
    pending_seconds: float = 30.0
    singular_aliases: bool = False
    ipn_signature_version: str = "2"
    ipn_retry_base_seconds: float = 0.5
    ipn_max_attempts: int = 6
    persist_interval: float = 0.5
    settlement_period_seconds: float = 86_400.0
    """Length of a settlement period on the emulator clock (periods end at multiples of it)."""


@dataclass
class Fault:
    """An injected failure of the next `remaining` calls of `operation` (None: every call)."""

    operation: str
    remaining: int | None
    latency_ms: float = 0.0
    status: int | None = None
    reason_code: str | None = None
    drop: bool = False
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    def describe(self) -> Obj:
        """The control API's view: every field, camelCase."""
        return {_camel(f.name): getattr(self, f.name) for f in fields(self)}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


@dataclass
class Key:
    key_id: str
    pem: str
    merchant_id: str
    public_key: rsa.RSAPublicKey


class Emulator:
    """Process-wide state behind one app: engine, keys, idempotency records, faults, IPN."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.clock = Clock()
        self.ipn = IpnDispatcher(
            self.clock,
            config.ipn_urls,
            signature_version=config.ipn_signature_version,
            max_attempts=config.ipn_max_attempts,
            retry_base_seconds=config.ipn_retry_base_seconds,
        )
        self.engine = Engine(
            self.clock,
            notify=self.ipn.notify,
            pending_seconds=config.pending_seconds,
            singular_aliases=config.singular_aliases,
            settlement_period_seconds=config.settlement_period_seconds,
        )
        self.keys: dict[str, Key] = {}
        self.idempotency: dict[str, Obj] = {}
        self.faults: list[Fault] = []
        self.dirty = False
        for key_id, pem in config.keys.items():
            self.add_key(key_id, pem, config.merchant_id)
        if config.state_file is not None and config.state_file.exists():
            self.load(json.loads(config.state_file.read_text()))

    # ---------------------------------------------------------------- keys

    def add_key(self, key_id: str, pem: str, merchant_id: str | None = None) -> Key:
        try:
            public_key = signing.load_public_key(pem)
        except ValueError as exc:
            raise ApiError(400, "InvalidParameterValue", f"publicKeyPem: {exc}") from exc
        key = Key(
            key_id=key_id,
            pem=pem,
            merchant_id=merchant_id or self.config.merchant_id,
            public_key=public_key,
        )
        self.keys[key_id] = key
        self.dirty = True
        return key

    # ---------------------------------------------------------------- persistence

    def snapshot(self) -> Obj:
        return {
            "version": 1,
            "clockOffset": self.clock.offset,
            "engine": self.engine.data,
            "idempotency": self.idempotency,
            "keys": {
                k.key_id: {"pem": k.pem, "merchantId": k.merchant_id} for k in self.keys.values()
            },
            "ipn": {
                "subscriptions": self.ipn.subscriptions,
                "enabled": self.ipn.enabled,
                "signatureVersion": self.ipn.signature_version,
            },
        }

    def load(self, data: Obj) -> None:
        self.clock.offset = max(self.clock.offset, float(data.get("clockOffset", 0.0)))
        self.engine.load(data.get("engine", {}))
        self.idempotency = dict(data.get("idempotency", {}))
        for key_id, entry in data.get("keys", {}).items():
            if key_id not in self.keys:
                self.add_key(key_id, entry["pem"], entry.get("merchantId"))
        ipn = data.get("ipn", {})
        for url in ipn.get("subscriptions", []):
            if url not in self.ipn.subscriptions:
                self.ipn.subscriptions.append(url)
        self.ipn.enabled = bool(ipn.get("enabled", True))
        self.ipn.signature_version = str(ipn.get("signatureVersion", self.ipn.signature_version))

    def save_sync(self) -> None:
        if self.config.state_file is None:
            return
        payload = json.dumps(self.snapshot())
        _atomic_write(self.config.state_file, payload)
        self.dirty = False

    async def save(self) -> None:
        """Serialize on the loop (consistent snapshot), write the file off it."""
        if self.config.state_file is None or not self.dirty:
            return
        payload = json.dumps(self.snapshot())
        self.dirty = False
        await asyncio.to_thread(_atomic_write, self.config.state_file, payload)

    def reset(self, keys: bool = False) -> None:
        self.engine.reset()
        self.idempotency.clear()
        self.faults.clear()
        self.ipn.deliveries.clear()
        self.clock.offset = 0.0
        if keys:
            self.keys.clear()
        self.dirty = True

    # ---------------------------------------------------------------- faults

    def take_fault(self, operation: str) -> Fault | None:
        for fault in self.faults:
            if fault.operation in (operation, "*"):
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self.faults.remove(fault)
                return fault
        return None


def _atomic_write(path: Path, payload: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(payload)
    os.replace(tmp, path)


EMULATOR_KEY = web.AppKey("emulator", Emulator)


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(body).encode(),
        content_type=JSON_TYPE,
        headers=headers,
    )


def escape(value: object) -> str:
    return html.escape(str(value))
