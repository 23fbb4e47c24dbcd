#!/usr/bin/env node
// Opens SurgeMQ's live metrics page (`serve --metrics-listen`, path /) in headless Chromium and
// waits until its charts are drawn from real data, then saves a screenshot and prints what the
// DOM holds. Used by scripts/metrics-test.sh; built-in Node modules only.
//
// Chromium is driven as tests/browser/run-page.js does: the DevTools protocol over
// --remote-debugging-pipe (fd 3 commands, fd 4 answers, NUL-ended JSON), the DOM read in real
// time every 250 ms (no --dump-dom: it returns before the page's first poll has an answer).
//
// The page passes when every chart (svg.chart) has at least --min-points points, the
// messages chart saw a rate above 0, the connections chart a count above 0, and the per-shard
// chart has one line per shard (--shards).
//
// usage: node metrics-page.js URL [--shards N] [--min-points N] [--timeout MS]
//          [--screenshot FILE] [--chromium PATH] [--log FILE]
// exit status: 0 pass, 1 the charts never got there (what they held is printed), 2 no page.
'use strict';

const { spawn } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const opts = { shards: 1, minPoints: 5, timeout: 40000, chromium: process.env.CHROMIUM || 'chromium' };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const take = () => argv[++i];
  switch (argv[i]) {
    case '--shards': opts.shards = Number(take()); break;
    case '--min-points': opts.minPoints = Number(take()); break;
    case '--timeout': opts.timeout = Number(take()); break;
    case '--screenshot': opts.screenshot = take(); break;
    case '--chromium': opts.chromium = take(); break;
    case '--log': opts.log = take(); break;
    default:
      if (argv[i].startsWith('--') || opts.url) {
        console.error(`usage: node metrics-page.js URL [options] (not ${argv[i]})`);
        process.exit(2);
      }
      opts.url = argv[i];
  }
}

const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'surgemq-chromium-'));
const logFd = opts.log ? fs.openSync(opts.log, 'a') : 'ignore';
const chromium = spawn(opts.chromium, [
  '--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
  '--remote-debugging-pipe', `--user-data-dir=${profile}`, '--no-first-run',
  '--no-default-browser-check', '--disable-extensions', '--disable-background-networking',
  '--disable-component-update', '--disable-default-apps', '--disable-sync', '--mute-audio',
  '--window-size=1280,1000', 'about:blank',
], { stdio: ['ignore', logFd, logFd, 'pipe', 'pipe'], detached: true });

let done = false;
let exited = false;
chromium.on('exit', (code, signal) => {
  exited = true;
  if (!done) finish(2, `Chromium exited (code ${code}, signal ${signal})`);
});
chromium.on('error', (err) => finish(2, `cannot start ${opts.chromium}: ${err.message}`));

let nextId = 1;
const pending = new Map();
const consoleLines = [];
let inbuf = Buffer.alloc(0);
chromium.stdio[3].on('error', () => {});
chromium.stdio[4].on('error', () => {});
chromium.stdio[4].on('data', (chunk) => {
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
    } else if (msg.method === 'Runtime.exceptionThrown') {
      const d = msg.params.exceptionDetails || {};
      consoleLines.push(`exception: ${(d.exception && d.exception.description) || d.text}`);
    } else if (msg.method === 'Runtime.consoleAPICalled') {
      consoleLines.push(`console.${msg.params.type}: ${msg.params.args.map((a) => a.value).join(' ')}`);
    } else if (msg.method === 'Log.entryAdded') {
      consoleLines.push(`browser ${msg.params.entry.level}: ${msg.params.entry.text}`);
    }
  }
});

let sessionId = null;
function send(method, params = {}) {
  const id = nextId++;
  const msg = { id, method, params };
  if (sessionId) msg.sessionId = sessionId;
  return new Promise((resolve, reject) => {
    pending.set(id, { resolve, reject, method });
    chromium.stdio[3].write(`${JSON.stringify(msg)}\0`);
  });
}
const withTimeout = (promise, ms) => Promise.race([promise, new Promise((_, reject) =>
  setTimeout(() => reject(new Error(`no answer in ${ms} ms`)), ms).unref())]);

// What the charts hold now.
const readCharts = `(() => {
  const charts = {};
  for (const svg of document.querySelectorAll('svg.chart')) {
    charts[svg.id] = {
      points: Number(svg.dataset.points || 0),
      max: Number(svg.dataset.max || 0),
      lines: [...svg.querySelectorAll('polyline')].map((p) => ({
        series: p.dataset.series, points: Number(p.dataset.points),
      })),
    };
  }
  const status = document.getElementById('status');
  return { charts, status: status ? status.textContent : null,
    tiles: [...document.querySelectorAll('.tile')].map((t) => t.innerText.replace(/\\n/g, ' ')) };
})()`;

function verdict(dom) {
  const problems = [];
  const ids = ['chart-messages', 'chart-connections', 'chart-drops', 'chart-shards'];
  for (const id of ids) {
    const c = dom.charts[id];
    if (!c) problems.push(`${id} missing`);
    else if (c.points < opts.minPoints) problems.push(`${id} has ${c.points} points`);
  }
  const m = dom.charts['chart-messages'];
  if (m && !(m.max > 0)) problems.push('chart-messages never above 0 messages/s');
  const c = dom.charts['chart-connections'];
  if (c && !(c.max > 0)) problems.push('chart-connections never above 0');
  const s = dom.charts['chart-shards'];
  if (s && s.lines.length !== opts.shards) {
    problems.push(`chart-shards has ${s.lines.length} lines for ${opts.shards} shards`);
  }
  return problems;
}

async function finish(code, message, dom) {
  if (done) return;
  done = true;
  if (dom) console.log(JSON.stringify(dom, null, 1));
  if (message) console.log(message);
  if (code !== 0 && consoleLines.length) console.log(consoleLines.slice(-20).join('\n'));
  if (opts.screenshot && sessionId && !exited) {
    try {
      const shot = await withTimeout(send('Page.captureScreenshot', { format: 'png' }), 5000);
      fs.writeFileSync(opts.screenshot, Buffer.from(shot.data, 'base64'));
      console.log(`screenshot: ${opts.screenshot}`);
    } catch (err) {
      console.log(`no screenshot: ${err.message}`);
    }
  }
  if (!exited) {
    try { await withTimeout(send('Browser.close'), 3000); } catch { /* killed below */ }
  }
  try { process.kill(-chromium.pid, 'SIGKILL'); } catch { /* already gone */ }
  fs.rmSync(profile, { recursive: true, force: true });
  process.exit(code);
}
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => finish(2, `stopped by ${sig}`));

async function main() {
  const { targetInfos } = await send('Target.getTargets');
  const page = targetInfos.find((t) => t.type === 'page');
  const targetId = page ? page.targetId : (await send('Target.createTarget', { url: 'about:blank' })).targetId;
  ({ sessionId } = await send('Target.attachToTarget', { targetId, flatten: true }));
  await send('Runtime.enable');
  await send('Log.enable');
  await send('Page.enable');
  const nav = await send('Page.navigate', { url: opts.url });
  if (nav.errorText) return finish(2, `cannot load ${opts.url}: ${nav.errorText}`);
  const deadline = Date.now() + opts.timeout;
  let dom = null;
  for (;;) {
    await new Promise((resolve) => setTimeout(resolve, 250));
    try {
      const { result } = await send('Runtime.evaluate', { expression: readCharts, returnByValue: true });
      dom = result.value;
    } catch { continue; /* between documents */ }
    const problems = verdict(dom);
    if (problems.length === 0) return finish(0, 'PASS: the live page draws every chart', dom);
    if (Date.now() > deadline) return finish(1, `FAIL: ${problems.join('; ')}`, dom);
  }
}
main().catch((err) => finish(2, `DevTools protocol: ${err.message}`));
