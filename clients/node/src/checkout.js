'use strict';
// One whole Amazon Pay checkout as a merchant backend drives it, with the buyer's two steps on
// Amazon's pages played by the local emulator's control plane.

const { newKey } = require('./client');

const REVIEW_URL = 'https://shop.example/review';
const RESULT_URL = 'https://shop.example/result';

async function emulatorStep(emulatorUrl, sessionId, step, body = {}) {
  const response = await fetch(`${emulatorUrl}/_emulator/checkoutSessions/${sessionId}/${step}`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body),
  });
  const payload = await response.json();
  if (!response.ok) throw new Error(`emulator ${step}: ${response.status} ${JSON.stringify(payload)}`);
  return payload;
}

/**
 * create session -> (buyer signs in on Amazon) -> update -> (buyer confirms at amazonPayRedirectUrl)
 * -> complete -> get charge -> capture -> refund. Returns every id and state on the way.
 */
async function runCheckout(client, emulatorUrl, { amount = '25.00', currency = 'USD', log = () => {} } = {}) {
  const price = { amount, currency_code: currency };
  const created = await client.checkoutSessions.CreateCheckoutSession({
    idempotency_key: newKey(),
    web_checkout_details: { checkout_review_return_url: REVIEW_URL },
  });
  const sessionId = created.checkout_session.checkout_session_id;
  log(`1. CreateCheckoutSession -> ${sessionId} (render the button with this id)`);

  const signIn = await emulatorStep(emulatorUrl, sessionId, 'signIn', { card: '1111' });
  log(`2. buyer signed in; Amazon redirects to ${signIn.redirectUrl}`);

  const updated = await client.checkoutSessions.UpdateCheckoutSession({
    checkout_session_id: sessionId,
    idempotency_key: newKey(),
    web_checkout_details: { checkout_result_return_url: RESULT_URL },
    payment_details: { payment_intent: 'PAYMENT_INTENT_AUTHORIZE', charge_amount: price },
    merchant_metadata: { merchant_reference_id: `node-${newKey().slice(0, 8)}` },
  });
  const redirect = updated.checkout_session.web_checkout_details.amazon_pay_redirect_url;
  log(`3. UpdateCheckoutSession -> send the buyer to ${redirect}`);

  const confirmed = await emulatorStep(emulatorUrl, sessionId, 'confirm');
  log(`4. buyer confirmed; Amazon redirects to ${confirmed.redirectUrl}`);

  const completed = await client.checkoutSessions.CompleteCheckoutSession({
    checkout_session_id: sessionId, idempotency_key: newKey(), charge_amount: price,
  });
  const session = completed.checkout_session;
  log(`5. CompleteCheckoutSession -> ${session.status_details.raw_state}, charge permission ${session.charge_permission_id}, charge ${session.charge_id}`);

  const charge = await client.charges.GetCharge({ charge_id: session.charge_id });
  log(`6. GetCharge -> ${charge.charge.status_details.raw_state}`);

  const captured = await client.charges.CaptureCharge({
    charge_id: session.charge_id, idempotency_key: newKey(), capture_amount: price,
  });
  log(`7. CaptureCharge -> ${captured.charge.status_details.raw_state}`);

  const refund = await client.refunds.CreateRefund({
    charge_id: session.charge_id, idempotency_key: newKey(), refund_amount: price,
  });
  log(`8. CreateRefund -> ${refund.refund.refund_id} ${refund.refund.status_details.raw_state}`);

  return {
    sessionId,
    sessionState: session.status_details.raw_state,
    chargePermissionId: session.charge_permission_id,
    chargeId: session.charge_id,
    authorizedState: charge.charge.status_details.raw_state,
    capturedState: captured.charge.status_details.raw_state,
    capturedAmount: captured.charge.capture_amount,
    refundId: refund.refund.refund_id,
    refundState: refund.refund.status_details.raw_state,
  };
}

module.exports = { runCheckout, emulatorStep, REVIEW_URL, RESULT_URL };
