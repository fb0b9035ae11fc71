"""Buyer PII encrypted at rest, erasable without touching the financial record.

Top-level PII fields of a snapshot (`PII_FIELDS`) are replaced by references `{"$pii": "<uuid>"}`
before anything is written; the values go to `pii_values`, AES-256-GCM encrypted with the active key
(its id stored beside each value, the row id as associated data). Reading resolves references with
whichever key encrypted them, so a key can be rotated without downtime: configure the new key on
every replica, make it active, then re-encrypt the old rows (`reencrypt`). An erased value resolves
to nothing.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["PII_FIELDS", "PiiKeyError", "PiiKeyring", "PiiVault", "holds_pii", "is_reference"]

PII_FIELDS = ("buyer", "shippingAddress", "billingAddress", "paymentPreferences", "addressDetails")
_REF = "$pii"
Conn = asyncpg.Connection | PoolConnectionProxy


class PiiKeyError(ValueError):
    """A key file is missing or malformed, or a value names a key this process does not have."""


def is_reference(value: Any) -> bool:
    """A sealed value's stand-in, `{"$pii": "<uuid>"}` (snapshots are decoded JSON: dicts)."""
    return isinstance(value, dict) and len(value) == 1 and _REF in value


def holds_references(snapshot: Mapping[str, Any]) -> bool:
    """Whether `snapshot` has sealed values to open (most objects hold no buyer data)."""
    return any(is_reference(value) for value in snapshot.values())


def holds_pii(snapshot: Mapping[str, Any]) -> bool:
    """Whether sealing `snapshot` would write to `pii_values` (a PII field with a plain value)."""
    for field in PII_FIELDS:
        value = snapshot.get(field)
        if value is not None and not is_reference(value):
            return True
    return False


def _read_key(path: Path) -> bytes:
    """A file of exactly 32 bytes is the raw key (any byte may be whitespace); anything else is
    its base64 text, surrounding whitespace allowed."""
    raw = path.read_bytes()
    if len(raw) == 32:
        return raw
    try:
        decoded = base64.b64decode(raw.strip(), validate=True)
    except ValueError:
        decoded = b""
    if len(decoded) != 32:
        raise PiiKeyError(f"{path}: expected 32 raw bytes or their base64 (AES-256 key)")
    return decoded


@dataclass(frozen=True)
class PiiKeyring:
    """Key id -> AES-256-GCM key. New values use `active`; any listed key decrypts."""

    keys: Mapping[str, bytes]
    active: str

    def __post_init__(self) -> None:
        if self.active not in self.keys:
            raise PiiKeyError(f"active key {self.active!r} is not among the configured keys")

    def __repr__(self) -> str:
        return f"PiiKeyring(key_ids={sorted(self.keys)}, active={self.active!r})"

    @classmethod
    def from_files(cls, files: Mapping[str, Path], active: str) -> PiiKeyring:
        return cls({key_id: _read_key(path) for key_id, path in files.items()}, active)

    @staticmethod
    def generate_file(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64encode(AESGCM.generate_key(bit_length=256)))
        path.chmod(0o600)

    def encrypt(self, plain: bytes, aad: bytes) -> tuple[str, bytes]:
        nonce = os.urandom(12)
        return self.active, nonce + AESGCM(self.keys[self.active]).encrypt(nonce, plain, aad)

    def decrypt(self, key_id: str, blob: bytes, aad: bytes) -> bytes:
        key = self.keys.get(key_id)
        if key is None:
            raise PiiKeyError(f"PII value encrypted with unknown key id {key_id!r}")
        try:
            return AESGCM(key).decrypt(blob[:12], blob[12:], aad)
        except InvalidTag:
            raise PiiKeyError(
                f"a PII value does not decrypt with key {key_id!r}: every replica must have the "
                "same key material for the same key id"
            ) from None


def _buyer_hash(snapshot: Mapping[str, Any]) -> bytes | None:
    buyer = snapshot.get("buyer")
    buyer_id = buyer.get("buyerId") if isinstance(buyer, Mapping) else None
    return hashlib.sha256(buyer_id.encode()).digest() if isinstance(buyer_id, str) else None


def buyer_hash_of(buyer_id: str) -> bytes:
    return hashlib.sha256(buyer_id.encode()).digest()


class PiiVault:
    def __init__(self, keyring: PiiKeyring) -> None:
        self.keyring = keyring

    async def seal(
        self,
        conn: Conn,
        snapshot: Mapping[str, Any],
        *,
        merchant: str,
        kind: str,
        object_id: str,
        charge_permission_id: str | None,
        reuse: Mapping[str, Any] | None = None,
        reuse_plain: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """`snapshot` with PII fields replaced by references. A field whose plain value equals
        `reuse_plain[field]` keeps the reference already in `reuse` (no new row)."""
        sealed = dict(snapshot)
        buyer_hash = _buyer_hash(snapshot)
        for field in PII_FIELDS:
            value = snapshot.get(field)
            if value is None or is_reference(value):
                continue
            if reuse is not None and reuse_plain is not None and reuse_plain.get(field) == value:
                previous = reuse.get(field)
                if is_reference(previous):
                    sealed[field] = previous
                    continue
            pii_id = uuid.uuid4()
            plain = json.dumps(value, separators=(",", ":"), sort_keys=True).encode()
            key_id, blob = self.keyring.encrypt(plain, pii_id.bytes)
            await conn.execute(
                """
                INSERT INTO pii_values (pii_id, merchant, kind, object_id, charge_permission_id,
                    buyer_hash, key_id, ciphertext)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                """,
                pii_id,
                merchant,
                kind,
                object_id,
                charge_permission_id,
                buyer_hash,
                key_id,
                blob,
            )
            sealed[field] = {_REF: str(pii_id)}
        return sealed

    async def discard(self, conn: Conn, sealed: Mapping[str, Any]) -> None:
        """Delete the rows `seal` just wrote for a snapshot that will not be stored after all."""
        ids = [uuid.UUID(v[_REF]) for v in sealed.values() if is_reference(v)]
        if ids:
            await conn.execute(
                "DELETE FROM pii_values WHERE pii_id = ANY($1::uuid[]) AND erased_at IS NULL",
                ids,
            )

    async def open_many(
        self, conn: Conn | asyncpg.Pool, snapshots: Iterable[Mapping[str, Any]]
    ) -> list[dict[str, Any]]:
        """Resolve references in each snapshot; erased values disappear from the result."""
        items = [dict(s) for s in snapshots]
        ids = {
            uuid.UUID(value[_REF])
            for item in items
            for value in item.values()
            if is_reference(value)
        }
        if not ids:
            return items
        rows = await conn.fetch(
            "SELECT pii_id, key_id, ciphertext FROM pii_values WHERE pii_id = ANY($1::uuid[])",
            list(ids),
        )
        values: dict[str, Any] = {}
        for row in rows:
            if row["ciphertext"] is None:
                continue
            plain = self.keyring.decrypt(
                row["key_id"], bytes(row["ciphertext"]), row["pii_id"].bytes
            )
            values[str(row["pii_id"])] = json.loads(plain)
        for item in items:
            for field, value in list(item.items()):
                if is_reference(value):
                    resolved = values.get(value[_REF])
                    if resolved is None:
                        del item[field]
                    else:
                        item[field] = resolved
        return items

    async def open(self, conn: Conn | asyncpg.Pool, snapshot: Mapping[str, Any]) -> dict[str, Any]:
        return (await self.open_many(conn, [snapshot]))[0]

    async def reencrypt(self, pool: asyncpg.Pool, *, batch: int = 500) -> int:
        """Re-encrypt values still under a non-active key; returns how many were rewritten."""
        done = 0
        while True:
            async with pool.acquire() as conn, conn.transaction():
                rows = await conn.fetch(
                    """
                    SELECT pii_id, key_id, ciphertext FROM pii_values
                    WHERE erased_at IS NULL AND key_id <> $1
                    LIMIT $2 FOR UPDATE SKIP LOCKED
                    """,
                    self.keyring.active,
                    batch,
                )
                for row in rows:
                    aad = row["pii_id"].bytes
                    plain = self.keyring.decrypt(row["key_id"], bytes(row["ciphertext"]), aad)
                    key_id, blob = self.keyring.encrypt(plain, aad)
                    await conn.execute(
                        "UPDATE pii_values SET key_id = $2, ciphertext = $3 WHERE pii_id = $1",
                        row["pii_id"],
                        key_id,
                        blob,
                    )
            done += len(rows)
            if len(rows) < batch:
                return done
