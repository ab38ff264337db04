// Harness of the browser tests: a real tsbroker and real tsagent processes on
// loopback in a temp dir, fake RDP ports for the agents' probes, and Debian's
// chromium driven by playwright-core. State is read from the broker's SQLite
// file with the sqlite3 command (read-only).
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
// TSBROKER_BUILD: another build directory (default build/)
export const BUILD = process.env.TSBROKER_BUILD || path.join(ROOT, 'build');
export const OUT = path.join(ROOT, 'tests', 'out');
export const TSBROKER = path.join(BUILD, 'tsbroker');
export const TSAGENT = path.join(BUILD, 'tsagent');
export const RDPPROBE = path.join(BUILD, 'rdpprobe');
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

/** Polls pred() until it returns a truthy value (returned) or throws. */
export async function waitUntil(pred, what, timeout = 10000, interval = 50) {
  const deadline = Date.now() + timeout;
  let last;
  while (Date.now() < deadline) {
    last = await pred();
    if (last) return last;
    await new Promise((r) => setTimeout(r, interval));
  }
  throw new Error(`timed out after ${timeout} ms waiting for ${what} (last: ${JSON.stringify(last)})`);
}

export async function freePort(host = '127.0.0.1') {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, host, () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Connects to host:port; true if something accepts. */
export function tcpAccepts(host, port, timeout = 1000) {
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    const done = (ok) => { s.destroy(); resolve(ok); };
    s.setTimeout(timeout, () => done(false));
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

export function tempDir(prefix) {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

/** A listening TCP port standing for a terminal server's RDP port. */
export class FakeRdp {
  async start() {
    this.server = net.createServer((c) => c.destroy());
    await new Promise((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.port = this.server.address().port;
    return this;
  }

  async close() {
    if (!this.server) return;
    const s = this.server;
    this.server = null;
    await new Promise((resolve) => s.close(resolve));
  }
}

export class Broker {
  constructor(dir, conf = {}) {
    this.dir = dir;
    this.db = path.join(dir, 'state.db');
    this.cert = path.join(dir, 'broker.crt');
    this.key = path.join(dir, 'broker.key');
    this.confPath = path.join(dir, 'broker.conf');
    this.logPath = path.join(dir, 'broker.log');
    this.conf = conf;
  }

  async start() {
    this.rdpPort = await freePort();
    this.httpPort = await freePort();
    const sections = {
      state: { path: this.db },
      rdp: { listen: `127.0.0.1:${this.rdpPort}`, certificate: this.cert, private_key: this.key, handshake_timeout: 5 },
      http: { listen: `127.0.0.1:${this.httpPort}`, web_root: path.join(ROOT, 'web') },
      health: { heartbeat_interval: 1, down_after: 3 },
      placement: { pending_ttl: 60 },
    };
    for (const [k, v] of Object.entries(this.conf)) {
      const [sec, name] = k.split('__');
      (sections[sec] ||= {})[name] = v;
    }
    fs.writeFileSync(this.confPath, Object.entries(sections).map(([s, keys]) =>
      `[${s}]\n${Object.entries(keys).map(([k, v]) => `${k} = ${v}\n`).join('')}`).join(''));
    this.out = '';
    const log = fs.openSync(this.logPath, 'a');
    this.proc = spawn(TSBROKER, ['-f', this.confPath, '-v'], { cwd: this.dir, stdio: ['ignore', 'pipe', log] });
    fs.closeSync(log);
    this.proc.stdout.setEncoding('utf8');
    this.proc.stdout.on('data', (d) => { this.out += d; });
    this.exited = new Promise((resolve) => this.proc.once('exit', resolve));
    await waitUntil(() => this.out.includes('tsbroker ready') || this.proc.exitCode !== null,
      'the broker to start', 15000);
    if (this.proc.exitCode !== null) throw new Error(`tsbroker exited: ${this.log()}`);
    const m = this.out.match(/^First admin password.*: (\S+)$/m);
    this.password = m ? m[1] : null;
    this.url = `https://127.0.0.1:${this.httpPort}`;
    return this;
  }

  async stop() {
    if (this.proc && this.proc.exitCode === null) {
      this.proc.kill('SIGTERM');
      await this.exited;
    }
  }

  log() { return fs.existsSync(this.logPath) ? fs.readFileSync(this.logPath, 'utf8') : ''; }

  cli(...args) {
    return execFileSync(TSBROKER, ['-f', this.confPath, ...args.map(String)], { cwd: this.dir, encoding: 'utf8' });
  }

  /** Adds a server and returns its agent token. */
  addServer(name, opts = {}) {
    const args = ['server', 'add', name, '--address', opts.address || '127.0.0.2'];
    for (const [k, v] of Object.entries(opts)) if (k !== 'address') args.push(`--${k.replace(/_/g, '-')}`, v);
    return this.cli(...args).trim().split('\n').pop();
  }

  /** Rows of a read-only query as objects. */
  query(sql) {
    const out = execFileSync('sqlite3', ['-json', `file:${this.db}?mode=ro`, sql], { encoding: 'utf8' });
    return out.trim() ? JSON.parse(out) : [];
  }
}

/** A tsagent with the file: sessions provider. */
export class Agent {
  constructor(dir, broker, token, name, rdpPort) {
    this.name = name;
    this.sessionsPath = path.join(dir, `${name}.sessions.json`);
    this.confPath = path.join(dir, `${name}.conf`);
    this.logPath = path.join(dir, `${name}.log`);
    this.token = token;
    const keys = {
      name, broker: `https://127.0.0.1:${broker.httpPort}`, token, ca: broker.cert,
      rdp_address: '127.0.0.1', rdp_port: rdpPort, sessions: `file:${this.sessionsPath}`,
      interval: 1, retry_max: 2, connect_timeout: 2, timeout: 5,
    };
    fs.writeFileSync(this.confPath, `[agent]\n${Object.entries(keys).map(([k, v]) => `${k} = ${v}\n`).join('')}`,
      { mode: 0o600 });
  }

  /** sessions: [[user, state], ...] written atomically. */
  setSessions(sessions) {
    const tmp = `${this.sessionsPath}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify(sessions.map(([user, state]) => ({ user, id: `id-${user}`, state }))));
    fs.renameSync(tmp, this.sessionsPath);
  }

  start() {
    const log = fs.openSync(this.logPath, 'a');
    this.proc = spawn(TSAGENT, ['-f', this.confPath, '-v'], { stdio: ['ignore', 'ignore', log] });
    fs.closeSync(log);
    this.exited = new Promise((resolve) => this.proc.once('exit', resolve));
    return this;
  }

  async stop() {
    if (this.proc && this.proc.exitCode === null) {
      this.proc.kill('SIGTERM');
      await this.exited;
    }
  }

  log() { return fs.existsSync(this.logPath) ? fs.readFileSync(this.logPath, 'utf8') : ''; }
}

/** Debian's chromium, headless, with a fresh profile. */
export async function launchChromium(profileDir) {
  const { chromium } = await import('playwright-core');
  return chromium.launchPersistentContext(profileDir, {
    executablePath: CHROMIUM,
    headless: true,
    ignoreHTTPSErrors: true,
    viewport: { width: 1366, height: 768 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}
