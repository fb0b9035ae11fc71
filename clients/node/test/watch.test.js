'use strict';
// watchEvents resumes after a dropped stream from the LAST event received. Uses a real grpc-js
// server (no service needed) that replays a history whose ids are not increasing, as the service
// delivers them, and drops the stream with UNAVAILABLE every two events.
const test = require('node:test');
const assert = require('node:assert/strict');
const grpc = require('@grpc/grpc-js');
const { connect, loadApi } = require('../src/client');

const HISTORY = ['3', '1', '2', '6', '4', '5', '9', '7', '8', '10', '12', '11'];

function startDroppingServer(requests) {
  const api = loadApi();
  const server = new grpc.Server();
  server.addService(api.LedgerService.service, {
    WatchEvents(call) {
      const after = String(call.request.after_event_id);
      requests.push(after);
      const start = after === '0' ? 0 : HISTORY.indexOf(after) + 1;
      HISTORY.slice(start, start + 2).forEach((id) => call.write({ event: { event_id: id } }));
      if (start + 2 >= HISTORY.length) return; // stays open, like a live stream
      call.emit('error', { code: grpc.status.UNAVAILABLE, details: 'replica restarting' });
    },
  });
  return new Promise((resolve, reject) => {
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) => {
      if (err) reject(err); else resolve({ server, port });
    });
  });
}

test('watchEvents resumes after the last event received, not the largest id', async () => {
  const requests = [];
  const { server, port } = await startDroppingServer(requests);
  const client = connect(`127.0.0.1:${port}`);
  try {
    const received = [];
    for await (const event of client.watchEvents({}, { maxDelayMs: 20 })) {
      received.push(event.event_id);
      if (received.length === HISTORY.length) break;
    }
    assert.deepEqual(received, HISTORY);
    assert.deepEqual(requests, ['0', '1', '6', '5', '7', '10']);
  } finally {
    client.close();
    server.forceShutdown();
  }
});
