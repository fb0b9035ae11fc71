'use strict';
// `make bench`: CreateCharge (captureNow) through Amazon's official Node SDK, unchanged, straight to
// the emulator over HTTPS: what a team embedding the SDK instead of running this service would do.
//
// A long-lived process (its connections stay warm between rounds, like an application's): reads one
// JSON command per line on stdin and answers one JSON line on stdout.
//   {"op": "run", "concurrency": 16, "seconds": 4, "permissions": ["S01-...", ...]}
//     -> {"ok": n, "errors": {...}, "seconds": s, "latencies_ms": [...], "cpu_ms": c}
//   {"op": "exit"}
// Each call takes the next charge permission of the list (one charge slot each); a round ends when
// `seconds` have passed or the list is used up. Env: EMULATOR_HOST (host:port of the HTTPS API),
// PUBLIC_KEY_ID, PRIVATE_KEY_FILE, NODE_EXTRA_CA_CERTS (the emulator's CA).
const crypto = require('crypto');
const fs = require('fs');
const readline = require('readline');
const { WebStoreClient } = require('@amazonpay/amazon-pay-api-sdk-nodejs');

const client = new WebStoreClient({
    publicKeyId: process.env.PUBLIC_KEY_ID,
    privateKey: fs.readFileSync(process.env.PRIVATE_KEY_FILE),
    region: 'us',
    sandbox: true,
    overrideServiceUrl: process.env.EMULATOR_HOST,
});
const amount = { amount: '1.00', currencyCode: 'USD' };

async function run({ concurrency, seconds, permissions }) {
    const latencies = [];
    const errors = {};
    let next = 0;
    const cpuBefore = process.cpuUsage();
    const started = process.hrtime.bigint();
    const stopAt = started + BigInt(Math.round(seconds * 1e9));

    async function worker() {
        while (next < permissions.length && process.hrtime.bigint() < stopAt) {
            const chargePermissionId = permissions[next++];
            const t0 = process.hrtime.bigint();
            try {
                const reply = await client.createCharge(
                    { chargePermissionId, chargeAmount: amount, captureNow: true },
                    { 'x-amz-pay-idempotency-key': crypto.randomUUID().replace(/-/g, '') },
                );
                if (reply.data.statusDetails.state !== 'Captured') {
                    throw new Error(`state ${reply.data.statusDetails.state}`);
                }
                latencies.push(Number(process.hrtime.bigint() - t0) / 1e6);
            } catch (err) {
                const name = err && err.response ? `HTTP ${err.response.status}` : String(err && err.code || err);
                errors[name] = (errors[name] || 0) + 1;
            }
        }
    }

    await Promise.all(Array.from({ length: concurrency }, worker));
    const cpu = process.cpuUsage(cpuBefore);
    return {
        ok: latencies.length,
        errors,
        seconds: Number(process.hrtime.bigint() - started) / 1e9,
        latencies_ms: latencies,
        cpu_ms: (cpu.user + cpu.system) / 1000,
        used: next,
    };
}

const lines = readline.createInterface({ input: process.stdin });
lines.on('line', async (line) => {
    const command = JSON.parse(line);
    if (command.op === 'exit') {
        process.exit(0);
    }
    const result = await run(command);
    process.stdout.write(JSON.stringify(result) + '\n');
});
process.stdout.write(JSON.stringify({ ready: true, node: process.versions.node }) + '\n');
