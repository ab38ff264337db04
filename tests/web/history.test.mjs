// The farm over time on the status page: a real broker sampling every
// second ([history] period = 1), real agents, Debian's chromium. At least 5
// samples arrive within 30 s and the three charts (uPlot, vendored) show
// their series under the page's strict CSP; a screenshot is kept in
// tests/out/history.png.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

import {
  Agent, Broker, FakeRdp, OUT, RDPPROBE, launchChromium, tempDir, waitUntil,
} from './harness.mjs';

const FARM = {
  ts1: [['alice', 'active'], ['bob', 'disconnected']],
  ts2: [['carol', 'active']],
  ts3: [],
};

let dir, broker, context, page;
const agents = [], rdps = [], cspViolations = [];

before(async () => {
  dir = tempDir('tsbroker-history-');
  broker = await new Broker(dir, { history__period: 1 }).start();
  for (const [name, sessions] of Object.entries(FARM)) {
    const token = broker.addServer(name, { max_sessions: 10 });
    const rdp = await new FakeRdp().start();
    const a = new Agent(dir, broker, token, name, rdp.port);
    a.setSessions(sessions);
    a.start();
    rdps.push(rdp);
    agents.push(a);
  }
  await waitUntil(() => broker.query("SELECT count(*) AS n FROM servers WHERE state = 'up'")[0].n === 3,
    'the three agents to report', 15000);
  context = await launchChromium(path.join(dir, 'profile'));
  page = context.pages()[0] || await context.newPage();
  page.on('pageerror', (e) => { throw e; });
  page.on('console', (m) => { if (/Content Security Policy|Refused to/.test(m.text())) cspViolations.push(m.text()); });
});

after(async () => {
  if (context) await context.close();
  for (const a of agents) await a.stop();
  for (const r of rdps) await r.close();
  if (broker) await broker.stop();
});

test('the charts show sessions per server, logons and refusals, and the headroom', async (t) => {
  const t0 = Date.now();
  await page.goto(`${broker.url}/`);
  await page.fill('#password', broker.password);
  await page.click('#login-submit');
  await page.locator('#app-view').waitFor();
  // a logon through the RDP endpoint, counted in a sample
  assert.ok(fs.existsSync(RDPPROBE), `${RDPPROBE} is needed (make)`);
  spawnSync(RDPPROBE, ['--host', '127.0.0.1', '--port', String(broker.rdpPort), '--user', 'dave',
    '--timeout', '5'], { timeout: 20000 });
  await page.waitForFunction(() => Number(document.body.dataset.historySamples || 0) >= 5, null,
    { timeout: 30000 });
  const took = Date.now() - t0;
  t.diagnostic(`5 samples on the page ${took} ms after the login`);
  assert.ok(took < 30000);

  const h = await page.evaluate(async () => (await fetch('/api/v1/history')).json());
  assert.equal(h.period, 1);
  assert.ok(h.samples.length >= 5, `${h.samples.length} samples`);
  const last = h.samples[h.samples.length - 1];
  assert.deepEqual(Object.keys(last.servers).sort(), ['ts1', 'ts2', 'ts3']);
  assert.equal(last.servers.ts1.active, 1);
  assert.equal(last.servers.ts1.disconnected, 1);
  assert.equal(last.servers.ts2.active, 1);
  // one a second, each once
  const ts = h.samples.map((s) => s.ts);
  assert.equal(new Set(ts).size, ts.length);
  assert.ok(ts.every((x, i) => i === 0 || x - ts[i - 1] >= 1000));
  // the same n+1 number as the card (once dave's placement is in both)
  let status;
  await waitUntil(async () => {
    status = await page.evaluate(async () => (await fetch('/api/v1/status')).json());
    const s = (await page.evaluate(async () => (await fetch('/api/v1/history')).json())).samples;
    return s[s.length - 1].headroom === status.n_plus_1.headroom;
  }, 'the last sample to have the card\'s headroom', 10000, 300);
  await page.waitForFunction((v) => document.getElementById('chart-headroom')
    .getAttribute('aria-label').endsWith(`last: ${v}`), status.n_plus_1.headroom);
  // the logon's period is sampled once it is over (and its grace): polled
  await waitUntil(async () => (await page.evaluate(async () =>
    (await fetch('/api/v1/history')).json())).samples.some((s) => s.logons + s.reconnects >= 1),
  'the logon in a sample', 10000, 300);

  // the legends name the series; the canvases are drawn
  const legend = async (id) => page.locator(`#${id} .u-legend .u-series .u-label`).allTextContents();
  const sessions = await legend('chart-sessions');
  for (const n of ['ts1', 'ts2', 'ts3']) assert.ok(sessions.includes(n), sessions.join());
  const logons = await legend('chart-logons');
  assert.ok(logons.includes('logons') && logons.includes('refusals'), logons.join());
  assert.ok((await legend('chart-headroom')).includes('headroom'));
  for (const id of ['chart-sessions', 'chart-logons', 'chart-headroom']) {
    const drawn = await page.evaluate((i) => {
      const c = document.querySelector(`#${i} canvas`);
      const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      for (let k = 3; k < px.length; k += 4) if (px[k] !== 0) return true;
      return false;
    }, id);
    assert.ok(drawn, `${id} has something drawn`);
  }
  assert.deepEqual(cspViolations, [], 'the charts run under the strict CSP');
  fs.mkdirSync(OUT, { recursive: true });
  await page.locator('#history-title').scrollIntoViewIfNeeded();
  await page.screenshot({ path: path.join(OUT, 'history.png'), fullPage: true });
});
