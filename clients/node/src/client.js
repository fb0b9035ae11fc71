'use strict';
// A Node.js caller of the Amazon Pay gRPC service: loads the API straight from protos/ (no
// generated code), decodes the service's rich errors (google.rpc.ErrorInfo / BadRequest /
// RetryInfo) and generates one idempotency key per logical operation.

const path = require('node:path');
const crypto = require('node:crypto');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

const PROTOS_DIR = path.resolve(__dirname, '..', '..', '..', 'protos');
const PROTO_FILES = [
  'checkout_session', 'charge_permission', 'charge', 'refund',
  'buyer', 'delivery_tracker', 'button', 'ledger',
].map((name) => `payments/amazonpay/v1/${name}.proto`);

// keepCase: the proto field names (snake_case), as every other language and grpcurl use them.
// enums as strings, 64-bit ints as strings (event ids), defaults filled in, oneofs named.
const LOADER_OPTIONS = {
  keepCase: true, longs: String, enums: String, defaults: true, oneofs: true,
  includeDirs: [PROTOS_DIR],
};

const SERVICES = {
  checkoutSessions: 'CheckoutSessionService',
  chargePermissions: 'ChargePermissionService',
  charges: 'ChargeService',
  refunds: 'RefundService',
  buyers: 'BuyerService',
  deliveryTrackers: 'DeliveryTrackerService',
  buttons: 'ButtonService',
  ledger: 'LedgerService',
};

// google.rpc.Status and the details the service attaches, wire-compatible definitions (only
// what a caller reads), so no googleapis checkout is needed.
const RPC_TYPES = protobuf.parse(`
  syntax = "proto3";
  package google.rpc;
  message Any { string type_url = 1; bytes value = 2; }
  message Status { int32 code = 1; string message = 2; repeated Any details = 3; }
  message ErrorInfo { string reason = 1; string domain = 2; map<string, string> metadata = 3; }
  message FieldViolation { string field = 1; string description = 2; }
  message BadRequest { repeated FieldViolation field_violations = 1; }
  message Duration { int64 seconds = 1; int32 nanos = 2; }
  message RetryInfo { Duration retry_delay = 1; }
`, { keepCase: true }).root;

function loadApi() {
  const definition = protoLoader.loadSync(PROTO_FILES, LOADER_OPTIONS);
  return grpc.loadPackageDefinition(definition).payments.amazonpay.v1;
}

/** A fresh idempotency key (UUID4 without dashes): one per logical operation, reused on retry. */
function newKey() {
  return crypto.randomUUID().replace(/-/g, '');
}

/** Decoded rich error: {code, codeName, message, reason, domain, metadata, fieldViolations, retryDelayS}. */
function errorDetails(err) {
  const out = {
    code: err.code,
    codeName: Object.keys(grpc.status).find((k) => grpc.status[k] === err.code) || String(err.code),
    message: err.details || err.message,
    reason: '', domain: '', metadata: {}, fieldViolations: {}, retryDelayS: null,
  };
  const raw = err.metadata && err.metadata.get('grpc-status-details-bin')[0];
  if (!raw) return out;
  const status = RPC_TYPES.lookupType('google.rpc.Status').decode(raw);
  for (const detail of status.details) {
    const name = detail.type_url.split('/').pop();
    if (name === 'google.rpc.ErrorInfo') {
      const info = RPC_TYPES.lookupType('google.rpc.ErrorInfo').decode(detail.value);
      Object.assign(out, { reason: info.reason, domain: info.domain, metadata: { ...info.metadata } });
    } else if (name === 'google.rpc.BadRequest') {
      const bad = RPC_TYPES.lookupType('google.rpc.BadRequest').decode(detail.value);
      for (const v of bad.field_violations) out.fieldViolations[v.field] = v.description;
    } else if (name === 'google.rpc.RetryInfo') {
      const retry = RPC_TYPES.lookupType('google.rpc.RetryInfo').decode(detail.value);
      const d = retry.retry_delay || {};
      out.retryDelayS = Number(d.seconds || 0) + (d.nanos || 0) / 1e9;
    }
  }
  return out;
}

class AmazonPayError extends Error {
  constructor(rpc, err) {
    const details = errorDetails(err);
    super(`${rpc}: ${details.codeName}${details.reason ? ` [${details.reason}]` : ''}: ${details.message}`);
    this.name = 'AmazonPayError';
    Object.assign(this, details, { rpc });
  }
}

const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

/**
 * LedgerService.WatchEvents as an async iterator that survives a dropped stream: on UNAVAILABLE,
 * or RESOURCE_EXHAUSTED with RetryInfo, it reopens the stream with after_event_id = the LAST event
 * received. Not the largest: events arrive in commit-safe position order, where ids can go down.
 * Start from the last event you processed (request.after_event_id) to be lossless across your own
 * restarts too. Break out of the loop to stop.
 */
async function* watchEvents(stub, metadata, request, { maxRetries = 10, maxDelayMs = 5000 } = {}) {
  let last = String(request.after_event_id || '0');
  let failures = 0;
  for (;;) {
    const call = stub.WatchEvents({ ...request, after_event_id: last }, metadata);
    try {
      for await (const message of call) {
        failures = 0;
        last = message.event.event_id;
        yield message.event;
      }
      return;
    } catch (err) {
      const details = errorDetails(err);
      const retriable = err.code === grpc.status.UNAVAILABLE
        || (err.code === grpc.status.RESOURCE_EXHAUSTED && details.retryDelayS !== null);
      failures += 1;
      if (!retriable || failures > maxRetries) throw new AmazonPayError('WatchEvents', err);
      const backoffMs = details.retryDelayS !== null
        ? details.retryDelayS * 1000 * (1 + 0.2 * Math.random())
        : Math.min(maxDelayMs, 100 * 2 ** (failures - 1)) * Math.random();
      await sleep(Math.min(maxDelayMs, backoffMs));
    } finally {
      call.cancel();
    }
  }
}

/**
 * connect(target, {tls, rootCerts, clientCert, clientKey, token, merchant, timeoutMs})
 * returns {checkoutSessions: {CreateCheckoutSession(req) -> Promise, ...}, ..., close()}.
 * Every method takes the request as a plain object with proto field names; `merchant` is filled
 * in from the options unless set; errors reject with AmazonPayError (reason, domain, ...).
 * The stream is `client.watchEvents(request, {maxRetries})`: see watchEvents above.
 */
function connect(target, options = {}) {
  const api = loadApi();
  let credentials = grpc.credentials.createInsecure();
  if (options.tls || options.rootCerts || options.clientCert) {
    credentials = grpc.credentials.createSsl(
      options.rootCerts || null, options.clientKey || null, options.clientCert || null);
  }
  const timeoutMs = options.timeoutMs || 30000;
  const client = {};
  const closers = [];
  for (const [prop, serviceName] of Object.entries(SERVICES)) {
    const stub = new api[serviceName](target, credentials);
    closers.push(() => stub.close());
    const methods = {};
    for (const rpc of Object.keys(api[serviceName].service)) {
      methods[rpc] = (request = {}) => new Promise((resolve, reject) => {
        const metadata = new grpc.Metadata();
        if (options.token) metadata.set('authorization', `Bearer ${options.token}`);
        const body = { merchant: options.merchant || '', ...request };
        stub[rpc](body, metadata, { deadline: Date.now() + timeoutMs }, (err, response) => {
          if (err) reject(new AmazonPayError(rpc, err));
          else resolve(response);
        });
      });
    }
    client[prop] = methods;
    if (serviceName === 'LedgerService') {
      client.watchEvents = (request = {}, watchOptions = {}) => {
        const metadata = new grpc.Metadata();
        if (options.token) metadata.set('authorization', `Bearer ${options.token}`);
        const body = { merchant: options.merchant || '', ...request };
        return watchEvents(stub, metadata, body, watchOptions);
      };
    }
  }
  client.close = () => closers.forEach((close) => close());
  return client;
}

module.exports = { connect, newKey, errorDetails, AmazonPayError, loadApi, PROTOS_DIR };
