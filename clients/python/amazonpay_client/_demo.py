"""`python -m amazonpay_client demo` (`make demo`): one whole purchase against `make run`.

create -> buyer signs in (emulator) -> update -> buyer confirms (emulator) -> complete -> capture
-> two partial refunds, printing each state. The buyer's two steps happen on Amazon's pages in
production; the local emulator plays them through its control plane (`/_emulator/...`).
"""

from __future__ import annotations

import asyncio
import json
import os
import urllib.error
import urllib.request
import uuid
from decimal import Decimal
from typing import IO, Any

from ._client import AmazonPayClient
from ._services import price

__all__ = ["DEFAULT_EMULATOR_URL", "buyer_step", "run_demo"]

DEFAULT_EMULATOR_URL = f"http://127.0.0.1:{os.environ.get('DEV_EMULATOR_PORT') or '8480'}"
REVIEW_URL = "https://shop.example/review"
RESULT_URL = "https://shop.example/result"


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    if not url.startswith(("http://", "https://")):
        raise RuntimeError(f"the emulator URL must be http(s)://..., not {url!r}")
    request = urllib.request.Request(  # noqa: S310 (scheme checked above)
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            answer: dict[str, Any] = json.load(response)
            return answer
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"emulator answered {exc.code} to {url}: {exc.read()[:300]!r}") from None
    except urllib.error.URLError as exc:
        raise RuntimeError(
            f"cannot reach the emulator at {url} ({exc.reason}); is `make run` going?"
            " (set --emulator-url or EMULATOR_URL)"
        ) from None


async def buyer_step(
    emulator_url: str, session_id: str, step: str, *, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    """`signIn` or `confirm` of the buyer at the emulator (in a thread: urllib blocks)."""
    url = f"{emulator_url.rstrip('/')}/_emulator/checkoutSessions/{session_id}/{step}"
    return await asyncio.to_thread(_post, url, body or {})


async def run_demo(
    client: AmazonPayClient,
    emulator_url: str,
    out: IO[str],
    *,
    amount: str = "50.00",
    currency: str = "USD",
) -> dict[str, str]:
    """The whole purchase; returns the ids and final states it printed."""

    def show(step: str, text: str) -> None:
        print(f"{step:<28} {text}", file=out, flush=True)

    reference = f"demo-{uuid.uuid4().hex[:8]}"
    created = await client.checkout_sessions.create(
        web_checkout_details={"checkout_review_return_url": REVIEW_URL}
    )
    session = created.checkout_session
    session_id = session.checkout_session_id
    show("CreateCheckoutSession", f"{session_id} {session.status_details.raw_state}")

    await buyer_step(emulator_url, session_id, "signIn", body={"card": "1111"})
    show("buyer signs in (emulator)", "card ****1111 chosen")

    updated = await client.checkout_sessions.update(
        session_id,
        web_checkout_details={"checkout_result_return_url": RESULT_URL},
        payment_details={
            "payment_intent": "PAYMENT_INTENT_AUTHORIZE",
            "charge_amount": price(amount, currency),
        },
        merchant_metadata={"merchant_reference_id": reference},
    )
    show(
        "UpdateCheckoutSession",
        f"{updated.checkout_session.status_details.raw_state}; order {reference}",
    )

    await buyer_step(emulator_url, session_id, "confirm")
    show("buyer confirms (emulator)", "pays on Amazon's page")

    completed = await client.checkout_sessions.complete(
        session_id, charge_amount=price(amount, currency)
    )
    session = completed.checkout_session
    show(
        "CompleteCheckoutSession",
        f"{session.status_details.raw_state}; charge permission {session.charge_permission_id}",
    )
    charge_id = session.charge_id
    authorized = await client.charges.get(charge_id)
    show("GetCharge", f"{charge_id} {authorized.charge.status_details.raw_state}")

    captured = await client.charges.capture(charge_id, capture_amount=price(amount, currency))
    show("CaptureCharge", f"{charge_id} {captured.charge.status_details.raw_state}")

    total = Decimal(amount)
    refunds = []
    for share in ("0.3", "0.1"):  # two partial refunds: 30 % and 10 % of the order
        part = str((total * Decimal(share)).quantize(Decimal("0.01")))
        refund = (
            await client.refunds.create(charge_id=charge_id, refund_amount=price(part, currency))
        ).refund
        refunds.append(refund)
        show("CreateRefund", f"{refund.refund_id} {part} {refund.status_details.raw_state}")
    print(
        f"\nDone. The order's whole history: python -m amazonpay_client order {reference}",
        file=out,
        flush=True,
    )
    return {
        "merchant_reference_id": reference,
        "checkout_session_id": session_id,
        "charge_permission_id": session.charge_permission_id,
        "charge_id": charge_id,
        "charge_state": captured.charge.status_details.raw_state,
        "refund_ids": ",".join(r.refund_id for r in refunds),
    }
