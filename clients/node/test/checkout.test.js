'use strict';
// Runs against the REAL service and emulator: AMAZONPAY_TARGET and EMULATOR_URL must be set
// (tests/clients/node/test_node_client.py starts both and runs this file).
const test = require('node:test');
const assert = require('node:assert/strict');
const { connect, newKey } = require('../src/client');
const { runCheckout } = require('../src/checkout');

const target = process.env.AMAZONPAY_TARGET;
const emulatorUrl = process.env.EMULATOR_URL;
const missing = !target || !emulatorUrl
  ? 'set AMAZONPAY_TARGET and EMULATOR_URL (a running service and emulator)' : false;

test('checkout, capture and refund through the real service', { skip: missing }, async () => {
  const client = connect(target);
  try {
    const result = await runCheckout(client, emulatorUrl, { amount: '31.40' });
    assert.equal(result.sessionState, 'Completed');
    assert.equal(result.authorizedState, 'Authorized');
    assert.equal(result.capturedState, 'Captured');
    assert.deepEqual(result.capturedAmount, { amount: '31.40', currency_code: 'USD' });
    assert.match(result.refundState, /^(RefundInitiated|Refunded)$/);

    const ledger = await client.ledger.ListTransactions({
      charge_permission_id: result.chargePermissionId, kind: 'OBJECT_KIND_CHARGE',
    });
    assert.deepEqual(ledger.transactions.map((t) => [t.object_id, t.raw_state]),
      [[result.chargeId, 'Captured']]);
    const history = await client.ledger.GetTransaction({
      kind: 'OBJECT_KIND_CHARGE', object_id: result.chargeId,
    });
    assert.deepEqual(history.events.map((e) => e.raw_state), ['Authorized', 'Captured']);
  } finally {
    client.close();
  }
});

test('the same idempotency key replays the stored answer', { skip: missing }, async () => {
  const client = connect(target);
  try {
    const request = {
      idempotency_key: newKey(),
      web_checkout_details: { checkout_review_return_url: 'https://shop.example/review' },
    };
    const first = await client.checkoutSessions.CreateCheckoutSession(request);
    const again = await client.checkoutSessions.CreateCheckoutSession(request);
    assert.equal(first.idempotent_replay, false);
    assert.equal(again.idempotent_replay, true);
    assert.equal(again.checkout_session.checkout_session_id,
      first.checkout_session.checkout_session_id);
  } finally {
    client.close();
  }
});

test('errors carry the reason, domain and field violations', { skip: missing }, async () => {
  const client = connect(target);
  try {
    await assert.rejects(
      client.charges.CreateCharge({
        idempotency_key: newKey(),
        charge_permission_id: 'S01-0000000-0000000',
        charge_amount: { amount: '1.001', currency_code: 'USD' },
      }),
      (err) => {
        assert.equal(err.codeName, 'INVALID_ARGUMENT');
        assert.equal(err.reason, 'VALIDATION_FAILED');
        assert.equal(err.domain, 'payments.amazonpay.v1');
        assert.ok('charge_amount.amount' in err.fieldViolations);
        return true;
      });
    await assert.rejects(
      client.ledger.GetTransaction({ kind: 'OBJECT_KIND_REFUND', object_id: 'S01-0000000-0000000-R1' }),
      (err) => err.codeName === 'NOT_FOUND' && err.reason === 'NOT_IN_LEDGER');
  } finally {
    client.close();
  }
});

test('watchEvents replays a charge history from a resume point on the real service', { skip: missing }, async () => {
  const client = connect(target);
  try {
    const result = await runCheckout(client, emulatorUrl, { amount: '12.00' });
    const history = await client.ledger.ListEvents({ object_id: result.chargeId });
    assert.deepEqual(history.events.map((e) => e.raw_state), ['Authorized', 'Captured']);
    const [authorized, captured] = history.events;
    const seen = [];
    for await (const event of client.watchEvents({
      object_id: result.chargeId, after_event_id: authorized.event_id,
    })) {
      seen.push([event.event_id, event.raw_state]);
      break;
    }
    assert.deepEqual(seen, [[captured.event_id, 'Captured']]);
  } finally {
    client.close();
  }
});
