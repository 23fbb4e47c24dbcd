#!/usr/bin/env node
// Loads one page in headless Chromium and waits until the page says PASS or FAIL in
// #result[data-status], then prints the result and the page's log. Built-in modules only.
//
// It talks to Chromium over the DevTools protocol through --remote-debugging-pipe: Chromium
// reads commands from its file descriptor 3 and writes answers and events to descriptor 4, each
// one JSON message ended by a NUL byte. So no WebSocket client (Node 20 has none built in) and no
// debugging port to pick or to race for. The DOM is read with Runtime.evaluate every 200 ms, in
// real time: --dump-dom with --virtual-time-budget fast-forwards the page's timers while a
// WebSocket is open, so it returns before (or instead of) the broker's answers.
//
// usage: node run-page.js URL [options]
//   --timeout MS          give up after MS milliseconds (default 45000)
//   --chromium PATH       the browser (default: $CHROMIUM, else chromium)
//   --flag FLAG           one more Chromium flag (repeatable), e.g. --flag=--ignore-certificate-errors
//   --pidfile FILE        write Chromium's pid (it leads its own process group) to FILE
//   --screenshot FILE     save a PNG of the page at the end
//   --log FILE            Chromium's own stdout and stderr (default: discarded)
// exit status: 0 PASS, 1 FAIL, 2 no result (timeout, the browser died or would not start).
'use strict';

const { spawn } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

function parseArgs(argv) {
  const opts = { timeout: 45000, chromium: process.env.CHROMIUM || 'chromium', flags: [] };
  const rest = [];
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i];
    let value = null;
    const eq = a.indexOf('=');
    if (a.startsWith('--') && eq > 0) {
      value = a.slice(eq + 1);
      a = a.slice(0, eq);
    }
    const take = () => (value !== null ? value : argv[++i]);
    switch (a) {
      case '--timeout': opts.timeout = Number(take()); break;
      case '--chromium': opts.chromium = take(); break;
      case '--flag': opts.flags.push(take()); break;
      case '--pidfile': opts.pidfile = take(); break;
      case '--screenshot': opts.screenshot = take(); break;
      case '--log': opts.log = take(); break;
      default:
        if (a.startsWith('--')) throw new Error(`unknown option ${a}`);
        rest.push(argv[i]);
    }
  }
  if (rest.length !== 1) throw new Error('usage: node run-page.js URL [options]');
  opts.url = rest[0];
  return opts;
}

const opts = parseArgs(process.argv.slice(2));
const t0 = Date.now();
const elapsed = () => `${((Date.now() - t0) / 1000).toFixed(1)} s`;
const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'surgemq-chromium-'));
const logFd = opts.log ? fs.openSync(opts.log, 'a') : 'ignore';

const chromium = spawn(opts.chromium, [
  '--headless=new',
  '--no-sandbox', // root in a container has no user namespaces for the sandbox
  '--disable-gpu',
  '--disable-dev-shm-usage',
  '--remote-debugging-pipe',
  `--user-data-dir=${profile}`,
  '--no-first-run',
  '--no-default-browser-check',
  '--disable-extensions',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-default-apps',
  '--disable-sync',
  '--metrics-recording-only',
  '--password-store=basic',
  '--use-mock-keychain',
  '--mute-audio',
  '--window-size=1000,700',
  ...opts.flags,
  'about:blank',
], { stdio: ['ignore', logFd, logFd, 'pipe', 'pipe'], detached: true });

let chromiumExited = false;
chromium.on('exit', (code, signal) => {
  chromiumExited = true;
  if (!done) finish(2, `Chromium exited (code ${code}, signal ${signal}) before a result`);
});
chromium.on('error', (err) => finish(2, `cannot start ${opts.chromium}: ${err.message}`));
if (opts.pidfile && chromium.pid) fs.writeFileSync(opts.pidfile, `${chromium.pid}\n`);

// The DevTools protocol over the pipe.
const toChromium = chromium.stdio[3];
const fromChromium = chromium.stdio[4];
let nextId = 1;
const pending = new Map();
const listeners = [];
let inbuf = Buffer.alloc(0);
toChromium.on('error', () => {});
fromChromium.on('error', () => {});
fromChromium.on('data', (chunk) => {
  inbuf = Buffer.concat([inbuf, chunk]);
  let end;
  while ((end = inbuf.indexOf(0)) >= 0) {
    const msg = JSON.parse(inbuf.subarray(0, end).toString('utf8'));
    inbuf = inbuf.subarray(end + 1);
    if (msg.id !== undefined && pending.has(msg.id)) {
      const { resolve, reject, method } = pending.get(msg.id);
      pending.delete(msg.id);
      if (msg.error) reject(new Error(`${method}: ${msg.error.message}`));
      else resolve(msg.result);
    } else if (msg.method) {
      for (const l of listeners) l(msg);
    }
  }
});

function send(method, params = {}, sessionId) {
  const id = nextId++;
  const msg = { id, method, params };
  if (sessionId) msg.sessionId = sessionId;
  return new Promise((resolve, reject) => {
    pending.set(id, { resolve, reject, method });
    toChromium.write(`${JSON.stringify(msg)}\0`);
  });
}

// What the page said on its console, its uncaught exceptions and the browser's own log entries
// (a refused WebSocket shows there): printed when there is no PASS.
const consoleLines = [];
listeners.push((msg) => {
  const p = msg.params || {};
  if (msg.method === 'Runtime.consoleAPICalled') {
    const text = (p.args || []).map((a) => (a.value !== undefined ? a.value : a.description))
      .join(' ');
    consoleLines.push(`console.${p.type}: ${text}`);
  } else if (msg.method === 'Runtime.exceptionThrown') {
    const d = p.exceptionDetails || {};
    consoleLines.push(`exception: ${(d.exception && d.exception.description) || d.text}`);
  } else if (msg.method === 'Log.entryAdded') {
    const e = p.entry || {};
    consoleLines.push(`browser ${e.level}: ${e.text}${e.url ? ` (${e.url})` : ''}`);
  }
});

let done = false;
let watchdog = null;
async function finish(code, message, page) {
  if (done) return;
  done = true;
  clearTimeout(watchdog);
  if (page) {
    console.log(page.text);
    if (code !== 0 || process.env.VERBOSE) {
      console.log('page log:');
      for (const line of page.log.split('\n').filter(Boolean)) console.log(`  ${line}`);
    }
  }
  if (message) console.log(message);
  if (code !== 0 && consoleLines.length) {
    console.log('console and browser log:');
    for (const line of consoleLines.slice(-40)) console.log(`  ${line}`);
  }
  if (opts.screenshot && sessionId && !chromiumExited) {
    try {
      const shot = await withTimeout(send('Page.captureScreenshot', { format: 'png' }, sessionId),
        5000);
      fs.writeFileSync(opts.screenshot, Buffer.from(shot.data, 'base64'));
    } catch (err) {
      console.log(`no screenshot: ${err.message}`);
    }
  }
  await stopChromium();
  fs.rmSync(profile, { recursive: true, force: true });
  process.exit(code);
}

function withTimeout(promise, ms) {
  return Promise.race([promise, new Promise((_, reject) =>
    setTimeout(() => reject(new Error(`no answer in ${ms} ms`)), ms).unref())]);
}

async function stopChromium() {
  if (!chromiumExited) {
    try { await withTimeout(send('Browser.close'), 3000); } catch { /* killed below */ }
    const gone = new Promise((resolve) => chromium.once('exit', resolve));
    if (!chromiumExited) await withTimeout(gone, 3000).catch(() => {});
  }
  // Whatever is left of its process group (renderers, zygotes) goes too.
  try { process.kill(-chromium.pid, 'SIGKILL'); } catch { /* already gone */ }
}

for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => finish(2, `stopped by ${sig}`));
}

watchdog = setTimeout(async () => {
  let page = null;
  try { page = await withTimeout(readResult(), 2000); } catch { /* nothing to show */ }
  finish(2, `no PASS or FAIL from the page after ${opts.timeout} ms`,
    page && { ...page, text: `page status: ${page.status}: ${page.text}` });
}, opts.timeout);

let sessionId = null;
const readExpression = `(() => {
  const r = document.getElementById('result');
  const l = document.getElementById('log');
  return r ? { status: r.dataset.status, text: r.textContent, log: l ? l.innerText : '' } : null;
})()`;

async function readResult() {
  const { result, exceptionDetails } = await send('Runtime.evaluate',
    { expression: readExpression, returnByValue: true }, sessionId);
  if (exceptionDetails) throw new Error(exceptionDetails.text);
  return result.value || { status: 'no #result element', text: '', log: '' };
}

async function main() {
  const { targetInfos } = await send('Target.getTargets');
  let page = targetInfos.find((t) => t.type === 'page');
  const targetId = page ? page.targetId : (await send('Target.createTarget',
    { url: 'about:blank' })).targetId;
  ({ sessionId } = await send('Target.attachToTarget', { targetId, flatten: true }));
  await send('Runtime.enable', {}, sessionId);
  await send('Log.enable', {}, sessionId);
  await send('Page.enable', {}, sessionId);
  const nav = await send('Page.navigate', { url: opts.url }, sessionId);
  if (nav.errorText) return finish(2, `cannot load ${opts.url}: ${nav.errorText}`);
  for (;;) {
    await new Promise((resolve) => setTimeout(resolve, 200));
    if (done) return undefined;
    try {
      page = await readResult();
    } catch (err) {
      continue; // between documents while the page loads
    }
    if (page.status === 'PASS') return finish(0, `(${elapsed()} in Chromium)`, page);
    if (page.status === 'FAIL') return finish(1, `(${elapsed()} in Chromium)`, page);
  }
}

main().catch((err) => finish(2, `DevTools protocol: ${err.message}`));
