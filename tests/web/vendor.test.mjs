// The vendored uPlot under web/vendor/ is the npm package package-lock.json
// pins: the tarball's sha512 is the lock's integrity, and the dist files and
// licence in web/vendor/ are byte for byte the tarball's. The tarball comes
// from npm's cache (filled by `npm ci`), else from `npm cache add`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';

import { ROOT } from './harness.mjs';

const WEB_TESTS = path.join(ROOT, 'tests', 'web');
const VENDORED = { 'package/dist/uPlot.iife.min.js': 'uPlot.iife.min.js',
  'package/dist/uPlot.min.css': 'uPlot.min.css', 'package/LICENSE': 'uPlot.LICENSE' };

function cachedTarball(integrity) {
  const hex = Buffer.from(integrity.replace(/^sha512-/, ''), 'base64').toString('hex');
  const cache = execFileSync('npm', ['config', 'get', 'cache'], { encoding: 'utf8' }).trim() ||
    path.join(os.homedir(), '.npm');
  return path.join(cache, '_cacache', 'content-v2', 'sha512', hex.slice(0, 2), hex.slice(2, 4), hex.slice(4));
}

/** {name: Buffer} of the regular files in a tar archive. */
function untar(buf) {
  const files = {};
  for (let off = 0; off + 512 <= buf.length;) {
    const h = buf.subarray(off, off + 512);
    if (h.every((b) => b === 0)) break;
    const str = (a, b) => h.subarray(a, b).toString('utf8').replace(/\0.*$/s, '');
    const size = parseInt(str(124, 136).trim() || '0', 8);
    const name = (str(345, 500) ? `${str(345, 500)}/` : '') + str(0, 100);
    if (h[156] === 0x30 || h[156] === 0) files[name] = buf.subarray(off + 512, off + 512 + size);
    off += 512 + Math.ceil(size / 512) * 512;
  }
  return files;
}

test('web/vendor holds the uPlot that package-lock.json pins, with its licence', () => {
  const lock = JSON.parse(fs.readFileSync(path.join(WEB_TESTS, 'package-lock.json'), 'utf8'));
  const pkg = lock.packages['node_modules/uplot'];
  assert.ok(pkg && pkg.integrity.startsWith('sha512-'), 'uplot is pinned in the lock');
  let tgz = cachedTarball(pkg.integrity);
  if (!fs.existsSync(tgz)) {
    execFileSync('npm', ['cache', 'add', `uplot@${pkg.version}`], { cwd: WEB_TESTS, stdio: 'ignore' });
    tgz = cachedTarball(pkg.integrity);
  }
  const tarball = fs.readFileSync(tgz);
  const sum = `sha512-${crypto.createHash('sha512').update(tarball).digest('base64')}`;
  assert.equal(sum, pkg.integrity, 'the tarball is the one the lock names');
  const files = untar(zlib.gunzipSync(tarball));
  for (const [inTar, vendored] of Object.entries(VENDORED)) {
    assert.ok(files[inTar], `${inTar} in the tarball`);
    assert.ok(fs.readFileSync(path.join(ROOT, 'web', 'vendor', vendored)).equals(files[inTar]),
      `web/vendor/${vendored} differs from uplot@${pkg.version}'s ${inTar}`);
  }
  assert.match(fs.readFileSync(path.join(ROOT, 'web', 'vendor', 'uPlot.LICENSE'), 'utf8'), /MIT License/);
});
