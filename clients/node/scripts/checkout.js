#!/usr/bin/env node
'use strict';
// Whole checkout against a running service + emulator (e.g. `make run`):
//   AMAZONPAY_TARGET=127.0.0.1:50051 EMULATOR_URL=http://127.0.0.1:8480 node scripts/checkout.js
const { connect } = require('../src/client');
const { runCheckout } = require('../src/checkout');

async function main() {
  const target = process.env.AMAZONPAY_TARGET || '127.0.0.1:50051';
  const emulatorUrl = (process.env.EMULATOR_URL || 'http://127.0.0.1:8480').replace(/\/$/, '');
  const client = connect(target, {
    merchant: process.env.AMAZONPAY_MERCHANT || '',
    token: process.env.AMAZONPAY_TOKEN || undefined,
  });
  try {
    const result = await runCheckout(client, emulatorUrl, { log: (line) => console.log(line) });
    console.log(JSON.stringify(result, null, 2));
  } finally {
    client.close();
  }
}

main().catch((err) => {
  console.error(err.reason ? `${err.message} (reason ${err.reason}, domain ${err.domain})` : err);
  process.exit(1);
});
