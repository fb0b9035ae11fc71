'use strict';
// Drives a complete purchase through Amazon's official Node SDK against the emulator, then the
// settlement operations the SDK has (Reports API, report schedules, Get Dispute).
// Env: EMULATOR_HTTP (control plane, plain HTTP), EMULATOR_HOST (host:port of the HTTPS API),
// PUBLIC_KEY_ID, PRIVATE_KEY_FILE. Prints one JSON line with the results; exits 1 on failure.
const fs = require('fs');
const crypto = require('crypto');
const http = require('http');
const https = require('https');
const { WebStoreClient } = require('@amazonpay/amazon-pay-api-sdk-nodejs');

const controlUrl = process.env.EMULATOR_HTTP;
const config = {
    publicKeyId: process.env.PUBLIC_KEY_ID,
    privateKey: fs.readFileSync(process.env.PRIVATE_KEY_FILE),
    region: 'us',
    sandbox: true,
    algorithm: process.env.ALGORITHM || 'AMZN-PAY-RSASSA-PSS-V2',
    overrideServiceUrl: process.env.EMULATOR_HOST,
};
const client = new WebStoreClient(config);
const key = () => crypto.randomUUID().replace(/-/g, '');
const amount = { amount: '14.00', currencyCode: 'USD' };

function control(path, body) {
    return new Promise((resolve, reject) => {
        const data = JSON.stringify(body || {});
        const req = http.request(`${controlUrl}/_emulator${path}`, {
            method: 'POST', headers: { 'content-type': 'application/json' },
        }, (res) => {
            let text = '';
            res.on('data', (c) => { text += c; });
            res.on('end', () => (res.statusCode >= 200 && res.statusCode < 300 ? resolve(JSON.parse(text))
                : reject(new Error(`${path}: ${res.statusCode} ${text}`))));
        });
        req.on('error', reject);
        req.end(data);
    });
}

function check(cond, what) {
    if (!cond) throw new Error(`check failed: ${what}`);
}

// The SDK disables TLS verification for overridden URLs; prove the emulator CA is trusted anyway.
function strictTlsProbe() {
    return new Promise((resolve, reject) => {
        https.get(`https://${process.env.EMULATOR_HOST}/_emulator/health`, { rejectUnauthorized: true }, (res) => {
            res.resume();
            res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`probe ${res.statusCode}`))));
        }).on('error', reject);
    });
}

// The pre-signed document URL needs no SDK: fetched unsigned, with the emulator CA trusted.
function download(url) {
    return new Promise((resolve, reject) => {
        https.get(url, { rejectUnauthorized: true }, (res) => {
            let text = '';
            res.on('data', (c) => { text += c; });
            res.on('end', () => (res.statusCode === 200 ? resolve(text)
                : reject(new Error(`download ${res.statusCode} ${text}`))));
        }).on('error', reject);
    });
}

const SANDBOX_SETTLEMENT = '_GET_FLAT_FILE_OFFAMAZONPAYMENTS_SANDBOX_SETTLEMENT_DATA_';

async function settle(chargeId) {
    const dispute = await control('/disputes', { chargeId, amount: '2.00' });
    const gotDispute = await client.getDispute(dispute.disputeId);
    check(gotDispute.data.chargeId === chargeId, 'get dispute');
    check(gotDispute.data.statusDetails.state === 'ActionRequired', 'dispute action required');

    const closed = await control('/settlement/close', {});
    const reports = await client.getReports({
        reportTypes: [SANDBOX_SETTLEMENT], processingStatuses: ['COMPLETED'], pageSize: 10,
    });
    check(reports.data.reports.some((r) => r.reportId === closed.reportId), 'get reports lists the period');
    const report = await client.getReportById(closed.reportId);
    check(report.data.reportDocumentId === closed.reportDocumentId, 'get report by id');
    const doc = await client.getReportDocument(report.data.reportDocumentId);
    check(doc.data.compressionAlgorithm === 'N/A', 'report document');
    const text = await download(doc.data.url);
    const lines = text.trim().split('\n');
    check(lines[0] === '"SellerId","SettlementStartDate","SettlementEndDate"', 'flat file header');
    const body = lines.slice(3);
    const has = (id, type) => body.some((l) => l.includes(`"${id}"`) && l.includes(`"${type}"`));
    check(has(chargeId, 'Capture'), 'capture line');
    check(has(dispute.disputeId, 'Chargeback'), 'chargeback line');

    const created = await client.createReport({
        reportType: SANDBOX_SETTLEMENT, startTime: '20000101T000000Z', endTime: '20991231T000000Z',
    }, { 'x-amz-pay-idempotency-key': key() });
    check(created.status === 201 && created.data.reportId, 'create report');

    const schedule = await client.createReportSchedule({
        reportType: SANDBOX_SETTLEMENT, scheduleFrequency: 'P1D', deleteExistingSchedule: true,
    }, { 'x-amz-pay-idempotency-key': key() });
    const scheduleId = schedule.data.reportScheduleId;
    const schedules = await client.getReportSchedules([SANDBOX_SETTLEMENT]);
    check(schedules.data.reportSchedules.some((s) => s.reportScheduleId === scheduleId), 'get report schedules');
    const one = await client.getReportScheduleById(scheduleId);
    check(one.data.scheduleFrequency === 'P1D', 'get report schedule by id');
    const cancelled = await client.cancelReportSchedule(scheduleId);
    check(cancelled.status === 200, 'cancel report schedule');
    return {
        disputeId: dispute.disputeId, reportId: closed.reportId, lines: body.length,
        createdReportId: created.data.reportId,
    };
}

async function main() {
    await strictTlsProbe();
    // Settlement periods closed by hand only (no daily boundary between capture and close).
    await control('/settlement', { periodSeconds: 31 * 86400 });
    const created = await client.createCheckoutSession({
        webCheckoutDetails: { checkoutReviewReturnUrl: 'https://merchant.example/review' },
        storeId: 'amzn1.application-oa2-client.emulator',
    }, { 'x-amz-pay-idempotency-key': key() });
    check(created.status === 201, 'create status 201');
    const id = created.data.checkoutSessionId;

    const signIn = await control(`/checkoutSessions/${id}/signIn`, { card: '1111' });
    check(signIn.redirectUrl.includes(id), 'signIn redirect');

    const got = await client.getCheckoutSession(id);
    check(got.data.buyer && got.data.buyer.buyerId, 'buyer associated');

    const updated = await client.updateCheckoutSession(id, {
        webCheckoutDetails: { checkoutResultReturnUrl: 'https://merchant.example/result' },
        paymentDetails: { paymentIntent: 'Authorize', canHandlePendingAuthorization: false, chargeAmount: amount },
        merchantMetadata: { merchantReferenceId: 'node-sdk-order-1', merchantStoreName: 'Node SDK' },
    });
    check(updated.data.constraints.length === 0, 'no constraints left');
    check(updated.data.webCheckoutDetails.amazonPayRedirectUrl, 'redirect url handed out');

    await control(`/checkoutSessions/${id}/confirm`);

    const completed = await client.completeCheckoutSession(id, { chargeAmount: amount });
    check(completed.status === 200, 'complete 200');
    check(completed.data.statusDetails.state === 'Completed', 'session completed');
    const chargeId = completed.data.chargeId;

    // Amazon's FAQ: Complete on a Completed session is refused, 422 InvalidCheckoutSessionStatus.
    let repeatedComplete = null;
    try {
        await client.completeCheckoutSession(id, { chargeAmount: amount });
    } catch (err) {
        repeatedComplete = err.response
            ? { status: err.response.status, reasonCode: err.response.data.reasonCode } : String(err);
    }
    check(repeatedComplete && repeatedComplete.status === 422, `repeated complete is 422 (got ${JSON.stringify(repeatedComplete)})`);

    const charge = await client.getCharge(chargeId);
    check(charge.data.statusDetails.state === 'Authorized', 'charge authorized');

    const captured = await client.captureCharge(chargeId, {
        captureAmount: amount, softDescriptor: 'NODE SDK',
    }, { 'x-amz-pay-idempotency-key': key() });
    check(captured.data.statusDetails.state === 'Captured', 'charge captured');

    const refund = await client.createRefund({
        chargeId, refundAmount: { amount: '4.00', currencyCode: 'USD' }, softDescriptor: 'REFUND',
    }, { 'x-amz-pay-idempotency-key': key() });
    check(refund.status === 201, 'refund 201');
    check(refund.data.statusDetails.state === 'RefundInitiated', 'refund initiated');

    const gotRefund = await client.getRefund(refund.data.refundId);
    check(gotRefund.data.refundId === refund.data.refundId, 'get refund');

    const cp = await client.getChargePermission(completed.data.chargePermissionId);
    check(cp.data.chargePermissionId === completed.data.chargePermissionId, 'get charge permission');

    let rejected = null;
    try {
        await client.getCharge(`${chargeId}X`);
    } catch (err) {
        rejected = err.response ? err.response.status : String(err);
    }
    check(rejected === 404, `unknown charge is 404 (got ${rejected})`);

    const settlement = await settle(chargeId);

    process.stdout.write(JSON.stringify({
        ok: true, checkoutSessionId: id, chargeId, refundId: refund.data.refundId,
        chargeState: captured.data.statusDetails.state, repeatedComplete, settlement,
    }) + '\n');
}

main().catch((err) => {
    const detail = err && err.response ? { status: err.response.status, data: err.response.data } : String(err && err.stack || err);
    process.stdout.write(JSON.stringify({ ok: false, error: detail }) + '\n');
    process.exit(1);
});
