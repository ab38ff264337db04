// Browser test of the desk on the status page (issue 16, item 2): users
// placed through the broker's real RDP endpoint by the raw client
// (tests/e2e/rawrdp.py) with the computer names it claims, shown in the
// sessions' Desk column and, for a searched user, in their trail, all as
// text: a name that looks like markup makes no element.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

import { Agent, Broker, FakeRdp, OUT, ROOT, launchChromium, tempDir, waitUntil } from './harness.mjs';

const MARKUP = '<img src=x>';
let dir, broker, agent, rdp, context, page;

/** One connection of the raw client up to the redirect: user from source,
 * claiming name (any string; sent as its UTF-16LE bytes). */
function rawPlace(user, name, source = '127.0.0.1') {
  const code = 'import sys; sys.path.insert(0, sys.argv[1]); import rawrdp; ' +
    'r = rawrdp.redirect("127.0.0.1", int(sys.argv[2]), sys.argv[3], source=sys.argv[5], ' +
    'client_name=bytes.fromhex(sys.argv[4])); sys.exit(0 if r.redirected else 1)';
  const hex = Buffer.from(name, 'utf16le').toString('hex');
  const p = spawnSync('/usr/bin/python3', ['-c', code, path.join(ROOT, 'tests', 'e2e'),
    String(broker.rdpPort), user, hex, source], { timeout: 30000, encoding: 'utf8' });
  assert.equal(p.status, 0, `${user} from ${name} not redirected: ${p.stderr}`);
}

const deskOf = (user) => page.locator(`#sessions-body tr[data-user="${user}"] td[data-desk]`);

before(async () => {
  dir = tempDir('tsbroker-desk-');
  broker = await new Broker(dir).start();
  const token = broker.addServer('ts1', { max_sessions: 10 });
  rdp = await new FakeRdp().start();
  agent = new Agent(dir, broker, token, 'ts1', rdp.port);
  agent.setSessions([]);
  agent.start();
  await waitUntil(() => broker.query("SELECT count(*) AS n FROM servers WHERE state = 'up'")[0].n === 1,
    'the agent to report', 15000);
  context = await launchChromium(path.join(dir, 'profile'));
  page = context.pages()[0] || await context.newPage();
  page.on('pageerror', (e) => { throw e; });
});

after(async () => {
  if (context) await context.close();
  if (agent) await agent.stop();
  if (rdp) await rdp.close();
  if (broker) await broker.stop();
});

test('the desk column and a searched user\'s trail show the claimed names as text', async () => {
  rawPlace('alice', 'DESK-7');
  rawPlace('alice', MARKUP, '127.0.0.5');         // a reconnect from another desk
  rawPlace('mallory', '\x1b[2J\x07');
  await page.goto(`${broker.url}/`);
  await page.fill('#password', broker.password);
  await page.click('#login-submit');
  await page.locator('#app-view').waitFor();
  await page.waitForFunction(() => document.querySelectorAll('#sessions-body tr').length === 2);
  assert.equal(await deskOf('alice').textContent(), MARKUP);
  assert.equal(await deskOf('mallory').textContent(), '?[2J?');
  assert.equal(await page.locator('#sessions-body img').count(), 0, 'a desk name made an element');
  assert.equal(await page.locator('#trail').isVisible(), false, 'a trail without a search');

  await page.fill('#filter-user', 'alice');
  await page.locator('#trail-list li').nth(1).waitFor();
  const items = await page.locator('#trail-list li').evaluateAll((ls) => ls.map((l) =>
    [l.dataset.trail, l.querySelector('.trail-desk').textContent, l.textContent]));
  assert.deepEqual(items.map((i) => i.slice(0, 2)), [['reconnect', MARKUP], ['new', 'DESK-7']]);
  assert.match(items[0][2], /from 127\.0\.0\.5 to ts1/);
  assert.match(await page.locator('#trail-title').textContent(), /Where alice sat.*claim.*kept 30 days/);
  assert.equal(await page.locator('#trail img').count(), 0, 'a trail name made an element');
  fs.mkdirSync(OUT, { recursive: true });
  await page.screenshot({ path: path.join(OUT, 'desk.png'), fullPage: true });

  await page.fill('#filter-user', 'nobody');
  await page.waitForFunction(() => document.getElementById('trail').hidden);
});
