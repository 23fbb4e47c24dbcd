// SurgeMQ browser test: MQTT.js (the `mqtt` npm package's browser bundle) in a real browser,
// against the broker's ws:// or wss:// listener. See index.html for the query string and
// scripts/browser-test.sh for the run.
//
// Steps, each of which must finish before the deadline:
//  1. connect with protocolVersion 4 (MQTT 3.1.1, WebSocket subprotocol "mqtt"), clean session;
//  2. subscribe to PREFIX/# at QoS 2 and check the grant;
//  3. publish to PREFIX/qos0, PREFIX/qos1, PREFIX/qos2/<non-ASCII> (QoS 0, 1, 2) and a
//     random binary payload (?big=BYTES, default 200,000) to PREFIX/big (QoS 1; over 64 KiB, so
//     a WebSocket frame with a 64-bit length, and more than one TLS record's worth over wss),
//     and wait until each comes back once, byte for byte, at its QoS, without RETAIN;
//  4. publish a random token to PREFIX/ready, retained, QoS 1. The test script waits for it with
//     mosquitto_sub on the broker's plain TCP port and answers with "echo <token>" on
//     PREFIX/external through mosquitto_pub: wait for that message from outside the browser;
//  5. unsubscribe, clear the retained PREFIX/ready, disconnect cleanly.
// Any MQTT.js error, an unexpected close, a wrong or duplicated message, a page error or the
// deadline makes it FAIL.
'use strict';

(function () {
  const started = performance.now();
  const params = new URLSearchParams(location.search);
  const rand = () => Math.random().toString(36).slice(2, 10);
  const url = params.get('url');
  const prefix = params.get('topic') || `surgemq-browser-test/${rand()}`;
  const timeoutMs = Number(params.get('timeout')) || 20000;
  const bigBytes = params.has('big') ? Number(params.get('big')) : 200000;

  const resultEl = document.getElementById('result');
  const logEl = document.getElementById('log');
  const ms = () => Math.round(performance.now() - started);

  let client = null;
  let finished = false;
  let closing = false;
  let step = 'load';
  // topic -> { want: string | Uint8Array, qos, label, seen, resolve }
  const expected = new Map();

  function log(msg) {
    const li = document.createElement('li');
    li.textContent = `${ms()} ms: ${msg}`;
    logEl.appendChild(li);
    console.log(`[browser-test] ${ms()} ms: ${msg}`);
  }

  function setStep(name) {
    step = name;
    log(name);
  }

  function finish(status, details) {
    if (finished) return;
    finished = true;
    clearTimeout(deadline);
    log(`${status}: ${details}`);
    resultEl.textContent = `${status}: ${details}`;
    resultEl.dataset.status = status; // last, so whoever sees the status sees the details too
    if (status !== 'PASS' && client) {
      closing = true;
      client.end(true);
    }
  }

  const fail = (details) => finish('FAIL', details);

  const deadline = setTimeout(() => {
    const waiting = [...expected.values()].filter((e) => e.seen === 0).map((e) => e.label);
    fail(`timed out after ${timeoutMs} ms at step "${step}"` +
      (waiting.length ? `; still waiting for: ${waiting.join(', ')}` : ''));
  }, timeoutMs);

  window.addEventListener('error', (e) => fail(`page error: ${e.message}`));
  window.addEventListener('unhandledrejection', (e) =>
    fail(`unhandled rejection at step "${step}": ${e.reason && e.reason.message || e.reason}`));

  function randomBytes(n) {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i += 65536) { // getRandomValues fills at most 64 KiB a call
      crypto.getRandomValues(out.subarray(i, Math.min(n, i + 65536)));
    }
    return out;
  }

  function sameBytes(a, b) {
    if (a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
    return true;
  }

  function describe(payload) {
    return payload.length > 64
      ? `${payload.length} bytes`
      : JSON.stringify(new TextDecoder().decode(payload));
  }

  // expect(topic, want, qos, label): a promise that resolves when that message arrives.
  function expect(topic, want, qos, label) {
    return new Promise((resolve) => {
      expected.set(topic, { want, qos, label, seen: 0, resolve });
    });
  }

  function onMessage(topic, payload, packet) {
    const e = expected.get(topic);
    if (!e) {
      fail(`unexpected message on ${JSON.stringify(topic)}: ${describe(payload)}`);
      return;
    }
    e.seen += 1;
    if (e.seen > 1) {
      // QoS 1 may be delivered twice by the rules (not over one clean connection, though);
      // QoS 0 and QoS 2 never.
      if (e.qos === 1) {
        log(`duplicate of ${e.label} (dup flag ${packet.dup})`);
        return;
      }
      fail(`${e.label} delivered ${e.seen} times`);
      return;
    }
    const ok = typeof e.want === 'string'
      ? new TextDecoder().decode(payload) === e.want
      : sameBytes(payload, e.want);
    if (!ok) {
      fail(`${e.label}: wrong payload ${describe(payload)}, want ` +
        describe(typeof e.want === 'string' ? new TextEncoder().encode(e.want) : e.want));
      return;
    }
    if (packet.qos !== e.qos) {
      fail(`${e.label}: delivered at QoS ${packet.qos}, want ${e.qos}`);
      return;
    }
    if (packet.retain) {
      fail(`${e.label}: delivered with RETAIN set to a subscription made before it was published`);
      return;
    }
    log(`received ${e.label} (${payload.length} bytes, QoS ${packet.qos})`);
    e.resolve();
  }

  async function run() {
    if (!url) throw new Error('no ?url= in the page address');
    if (typeof mqtt === 'undefined') {
      throw new Error('MQTT.js did not load (node_modules/mqtt/dist/mqtt.min.js: run npm ci)');
    }
    log(`topic prefix ${prefix}, deadline ${timeoutMs} ms`);

    setStep(`connect to ${url}`);
    client = mqtt.connect(url, {
      protocolVersion: 4,
      clientId: `browser-${rand()}`,
      clean: true,
      keepalive: 30,
      connectTimeout: 5000,
      reconnectPeriod: 0, // one connection: a reconnect would hide a dropped one
    });
    client.on('error', (err) => fail(`MQTT.js error at step "${step}": ${err.message}`));
    client.on('close', () => {
      if (!closing) fail(`connection closed at step "${step}"`);
    });
    client.on('message', onMessage);
    const connack = await new Promise((resolve) => client.once('connect', resolve));
    if (connack.returnCode !== 0 || connack.sessionPresent) {
      throw new Error(`CONNACK return code ${connack.returnCode}, session present ` +
        `${connack.sessionPresent}`);
    }
    log('connected (CONNACK 0, no session present)');

    setStep(`subscribe to ${prefix}/# at QoS 2`);
    const granted = await client.subscribeAsync(`${prefix}/#`, { qos: 2 });
    if (granted.length !== 1 || granted[0].qos !== 2) {
      throw new Error(`SUBACK granted ${JSON.stringify(granted)}, want QoS 2`);
    }
    log('subscribed, QoS 2 granted');

    const bigLabel = `the ${bigBytes.toLocaleString('en')}-byte QoS 1 message`;
    setStep(`publish QoS 0, 1, 2 and a ${bigBytes.toLocaleString('en')}-byte QoS 1 message; ` +
      'wait for each');
    const nonce = rand();
    const big = randomBytes(bigBytes);
    const messages = [
      [`${prefix}/qos0`, `qos0 ${nonce}`, 0, 'the QoS 0 message'],
      [`${prefix}/qos1`, `qos1 ${nonce}`, 1, 'the QoS 1 message'],
      [`${prefix}/qos2/ünïcødé ✓`, `qos2 ${nonce} ✓ ünïcødé`, 2, 'the QoS 2 message'],
      [`${prefix}/big`, big, 1, bigLabel],
    ];
    const arrivals = messages.map(([topic, payload, qos, label]) =>
      expect(topic, payload, qos, label));
    await Promise.all(messages.map(([topic, payload, qos]) =>
      client.publishAsync(topic, payload, { qos }))); // a Uint8Array does for MQTT.js too
    log('all four publishes done (PUBACK/PUBCOMP received)');
    await Promise.all(arrivals);

    setStep(`publish a token to ${prefix}/ready (retained); wait for the test script's answer ` +
      `on ${prefix}/external`);
    const token = `${rand()}${rand()}`;
    const ownReady = expect(`${prefix}/ready`, token, 1, 'our own ready message');
    const external = expect(`${prefix}/external`, `echo ${token}`, 1,
      'the message from outside the browser (mosquitto_pub)');
    await client.publishAsync(`${prefix}/ready`, token, { qos: 1, retain: true });
    await ownReady;
    await external;

    setStep('unsubscribe, clear the retained message, disconnect');
    await client.unsubscribeAsync(`${prefix}/#`);
    await client.publishAsync(`${prefix}/ready`, '', { qos: 1, retain: true });
    closing = true;
    await client.endAsync();

    finish('PASS', `${url}: QoS 0, 1, 2 and ${bigBytes}-byte messages came back, the message ` +
      `from outside the browser arrived, clean disconnect; ${ms()} ms`);
  }

  run().catch((err) => fail(`at step "${step}": ${err && err.message || err}`));
})();
