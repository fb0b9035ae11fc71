from __future__ import annotations

import os

import pytest

from service.ledger import EventFilter, Ledger, ObjectFilter, ObjectRecord, PiiKeyError, PiiKeyring
from service.ledger._pii import holds_references, is_reference

BUYER = {"buyerId": "amzn1.account.TEST", "name": "Ada Lovelace", "email": "ada@example.com"}


def permission(**extra: object) -> ObjectRecord:
    return ObjectRecord(
        merchant="default",
        kind="charge_permission",
        object_id="S01-1111111-2222222",
        state="Chargeable",
        charge_permission_id="S01-1111111-2222222",
        snapshot={
            "chargePermissionId": "S01-1111111-2222222",
            "buyer": BUYER,
            "shippingAddress": {"name": "Ada Lovelace", "city": "London"},
            **extra,
        },
    )


async def test_values_are_stored_encrypted_with_their_key_id(database_url: str) -> None:
    ledger = await Ledger.connect(database_url, keyring=PiiKeyring({"k1": os.urandom(32)}, "k1"))
    try:
        await ledger.migrate()
        await ledger.repository.record([permission()], "api")
        rows = await ledger.pool.fetch("SELECT key_id, ciphertext FROM pii_values")
        assert {r["key_id"] for r in rows} == {"k1"}
        assert all(b"Ada" not in bytes(r["ciphertext"]) for r in rows)
        raw = await ledger.pool.fetchval("SELECT snapshot::text FROM objects")
        assert "Ada" not in raw
        assert '"$pii"' in raw
        stored = await ledger.repository.get_object(
            "default", "charge_permission", "S01-1111111-2222222"
        )
        assert stored is not None
        assert stored.snapshot["buyer"] == BUYER
    finally:
        await ledger.close()


async def test_an_unchanged_observation_reuses_values_and_writes_no_event(
    database_url: str,
) -> None:
    ledger = await Ledger.connect(database_url, keyring=PiiKeyring({"k1": os.urandom(32)}, "k1"))
    try:
        await ledger.migrate()
        assert len(await ledger.repository.record([permission()], "api")) == 1
        assert await ledger.repository.record([permission()], "poll") == []
        assert await ledger.pool.fetchval("SELECT count(*) FROM pii_values") == 2
    finally:
        await ledger.close()


async def test_keys_rotate_without_downtime(database_url: str) -> None:
    k1, k2 = os.urandom(32), os.urandom(32)
    old = await Ledger.connect(database_url, keyring=PiiKeyring({"k1": k1}, "k1"))
    await old.migrate()
    await old.repository.record([permission()], "api")
    await old.close()

    both = await Ledger.connect(database_url, keyring=PiiKeyring({"k1": k1, "k2": k2}, "k2"))
    try:
        await both.repository.record([permission(note="new")], "api")
        stored = await both.repository.get_object(
            "default", "charge_permission", "S01-1111111-2222222"
        )
        assert stored is not None
        assert stored.snapshot["buyer"] == BUYER
        assert await both.vault.reencrypt(both.pool, batch=1) == 2
        keys = await both.pool.fetch("SELECT DISTINCT key_id FROM pii_values")
        assert [r["key_id"] for r in keys] == ["k2"]
    finally:
        await both.close()

    new = await Ledger.connect(database_url, keyring=PiiKeyring({"k2": k2}, "k2"))
    try:
        events = await new.repository.object_events(
            "default", "charge_permission", "S01-1111111-2222222"
        )
        assert all(e.snapshot["buyer"] == BUYER for e in events)
    finally:
        await new.close()


async def test_a_wrong_key_for_an_id_fails_loudly(database_url: str) -> None:
    first = await Ledger.connect(database_url, keyring=PiiKeyring({"k1": os.urandom(32)}, "k1"))
    await first.migrate()
    await first.repository.record([permission()], "api")
    await first.close()
    wrong = await Ledger.connect(database_url, keyring=PiiKeyring({"k1": os.urandom(32)}, "k1"))
    try:
        with pytest.raises(PiiKeyError, match="same key material"):
            await wrong.repository.get_object("default", "charge_permission", "S01-1111111-2222222")
    finally:
        await wrong.close()


async def test_retention_erases_old_values_and_keeps_the_record(ledger: Ledger) -> None:
    await ledger.repository.record([permission()], "api")
    await ledger.pool.execute("UPDATE pii_values SET created_at = now() - interval '10 days'")
    assert await ledger.repository.erase_expired_pii(older_than_days=30) == 0
    assert await ledger.repository.erase_expired_pii(older_than_days=5) == 2
    stored = await ledger.repository.get_object(
        "default", "charge_permission", "S01-1111111-2222222"
    )
    assert stored is not None
    assert "buyer" not in stored.snapshot
    assert stored.snapshot["chargePermissionId"] == "S01-1111111-2222222"
    assert stored.state == "Chargeable"
    assert stored.buyer_data_erased_at is not None
    assert (
        await ledger.pool.fetchval("SELECT count(*) FROM pii_values WHERE ciphertext IS NOT NULL")
        == 0
    )


def test_a_short_key_file_is_refused(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "short.key"
    path.write_bytes(b"too short")
    with pytest.raises(PiiKeyError, match="32 raw bytes"):
        PiiKeyring.from_files({"k": path}, "k")
    assert "k1" in repr(PiiKeyring({"k1": os.urandom(32)}, "k1"))
    assert "bytes" not in repr(PiiKeyring({"k1": os.urandom(32)}, "k1"))


async def test_the_reencrypt_command_moves_every_value_to_the_active_key(
    database_url: str, tmp_path: object
) -> None:
    import asyncio
    import sys
    from pathlib import Path

    from tests._postgres import REPO

    base = Path(str(tmp_path))
    k1, k2 = base / "k1", base / "k2"
    PiiKeyring.generate_file(k1)
    PiiKeyring.generate_file(k2)
    first = await Ledger.connect(database_url, keyring=PiiKeyring.from_files({"k1": k1}, "k1"))
    await first.migrate()
    await first.repository.record([permission()], "api")
    await first.close()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "PII_KEY_FILES": f"k1={k1},k2={k2}",
        "PII_ACTIVE_KEY_ID": "k2",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service",
        "reencrypt-pii",
        cwd=REPO,
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    only_k2 = await Ledger.connect(database_url, keyring=PiiKeyring.from_files({"k2": k2}, "k2"))
    try:
        stored = await only_k2.repository.get_object(
            "default", "charge_permission", "S01-1111111-2222222"
        )
        assert stored is not None
        assert stored.snapshot["buyer"] == BUYER
    finally:
        await only_k2.close()


def test_a_raw_key_starting_or_ending_with_whitespace_is_kept_whole(tmp_path: object) -> None:
    import base64
    from pathlib import Path

    base = Path(str(tmp_path))
    for name, key in (
        ("lead", b"\n" + os.urandom(30) + b"x"),
        ("tail", b"x" + os.urandom(30) + b" "),
        ("both", b"\t" + os.urandom(30) + b"\r"),
    ):
        raw = base / f"{name}.key"
        raw.write_bytes(key)
        assert PiiKeyring.from_files({"k": raw}, "k").keys["k"] == key
        text = base / f"{name}.b64"
        text.write_bytes(b"  " + base64.b64encode(key) + b"\n")
        assert PiiKeyring.from_files({"k": text}, "k").keys["k"] == key


async def test_a_listing_mixing_objects_with_and_without_buyer_data_opens_each_right(
    ledger: Ledger,
) -> None:
    """Objects without sealed values skip the vault; beside them, sealed ones are still opened
    and the plain ones come back as stored."""
    charge = ObjectRecord(
        merchant="default",
        kind="charge",
        object_id="S01-1111111-2222222-C000001",
        state="Captured",
        charge_permission_id="S01-1111111-2222222",
        snapshot={"chargeId": "S01-1111111-2222222-C000001", "softDescriptor": "SHOP"},
    )
    await ledger.repository.record([permission(), charge], "api")
    page = await ledger.repository.list_objects(ObjectFilter(merchant="default"), page_size=10)
    by_kind = {o.kind: o.snapshot for o in page.items}
    assert by_kind["charge_permission"]["buyer"] == BUYER
    assert by_kind["charge"] == {
        "chargeId": "S01-1111111-2222222-C000001",
        "softDescriptor": "SHOP",
    }
    events = await ledger.repository.list_events(EventFilter(merchant="default"), page_size=10)
    assert {e.kind: e.snapshot.get("buyer") for e in events.items} == {
        "charge_permission": BUYER,
        "charge": None,
    }


@pytest.mark.parametrize(
    ("value", "sealed"),
    [
        ({"$pii": "2f0c1e0e-0000-4000-8000-000000000000"}, True),
        ({"$pii": "x", "name": "Ada"}, False),
        ({"name": "Ada"}, False),
        ("$pii", False),
        (None, False),
        ([{"$pii": "x"}], False),
    ],
)
def test_only_a_lone_pii_key_marks_a_sealed_value(value: object, sealed: bool) -> None:
    assert is_reference(value) is sealed
    assert holds_references({"buyer": value}) is sealed
