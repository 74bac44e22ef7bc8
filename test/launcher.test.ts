/**
 * Launcher mode (--spawn-memcached): memrepl runs its own stock memcached on a
 * private unix socket, restarts it if it dies, and the restarted (empty)
 * memcached is refilled from the peer. A memcached left running by a memrepl
 * killed with SIGKILL is adopted by the next memrepl on the same run dir.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';
import { load, untilSame } from './support/bulk';
import { memcachedStat, RawClient } from './support/client';
import { eventually, freePort } from './support/ports';
import { Running, startMemrepl, startNode, stopAll } from './support/processes';
import { stat } from './support/replication';

/** The pid of the memcached behind a memrepl (its `stats`, forwarded). */
const memcachedPid = (proxyPort: number): Promise<number> => memcachedStat(proxyPort, 'pid');

/** Alive and not a zombie: an orphaned memcached may wait a while for PID 1 to reap it. */
const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
    return stat[stat.lastIndexOf(')') + 2] !== 'Z';
  } catch {
    return false;
  }
};

const cmdline = (pid: number) => {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  } catch {
    return [];
  }
};

/** A run dir of the test's own (its parent is removed after the tests). */
const tempParents: string[] = [];
function newRunDir(): string {
  const parent = fs.mkdtempSync(path.join(os.tmpdir(), 'memrepl-launcher-test-'));
  tempParents.push(parent);
  return path.join(parent, 'run');
}

/** Every memcached serving on a run dir's socket, by scanning /proc: counts memcacheds started for it. */
function memcachedsOn(runDir: string): number[] {
  const socket = path.join(runDir, 'memcached.sock');
  return fs
    .readdirSync('/proc')
    .filter((name) => /^\d+$/.test(name))
    .map(Number)
    .filter((pid) => {
      const argv = cmdline(pid);
      return path.basename(argv[0] ?? '') === 'memcached' && argv[argv.indexOf('-s') + 1] === socket && alive(pid);
    });
}

const readPidFile = (runDir: string, name = 'memcached.pid') => Number(fs.readFileSync(path.join(runDir, name), 'utf8').trim());

/**
 * Memcacheds the launcher started for this test's run dirs outlive a memrepl
 * killed with SIGKILL: kill those (and only those: verified by their socket) at the end.
 */
after(() => {
  for (const parent of tempParents) {
    for (const pid of memcachedsOn(path.join(parent, 'run'))) process.kill(pid, 'SIGKILL');
    fs.rmSync(parent, { recursive: true, force: true });
  }
});

async function setKey(port: number, key: string, value: string): Promise<void> {
  const client = await RawClient.connect(port);
  try {
    assert.equal(await client.request(`set ${key} 0 0 ${value.length}\r\n${value}\r\n`), 'STORED\r\n');
  } finally {
    client.close();
  }
}

async function deleteKey(port: number, key: string): Promise<void> {
  const client = await RawClient.connect(port);
  try {
    assert.equal(await client.request(`delete ${key}\r\n`), 'DELETED\r\n');
  } finally {
    client.close();
  }
}

async function getKey(port: number, key: string): Promise<string> {
  const client = await RawClient.connect(port);
  try {
    return await client.request(`get ${key}\r\n`, 'END\r\n');
  } finally {
    client.close();
  }
}

async function maxBytes(port: number): Promise<number> {
  const client = await RawClient.connect(port);
  try {
    return Number(/STAT maxbytes (\d+)/.exec(await client.request('stats settings\r\n', 'END\r\n'))![1]);
  } finally {
    client.close();
  }
}

const launcherFlags = (runDir: string, ...more: string[]) => ['--spawn-memcached', '-v', '--run-dir', runDir, ...more];

const defaultRunDir = (port: number) => path.join(os.tmpdir(), `memrepl-${port}`);

describe('launcher mode', () => {
  it('runs memcached with the given flags, restarts it when killed, and the peer refills it', async () => {
    const ra = await freePort();
    const a = await startNode('a', ra, null);
    const rb = await freePort();
    // The upstream given by the test helper is replaced by the private socket.
    const b = await startMemrepl(0, [
      '--spawn-memcached',
      '--run-dir',
      newRunDir(),
      '-m',
      '32',
      '-t',
      '2',
      '-X',
      String(rb),
      '-x',
      `127.0.0.1:${ra}`,
      '--node-id',
      'b',
    ]);
    try {
      const client = await RawClient.connect(b.port);
      assert.match(await client.request('stats settings\r\n', 'END\r\n'), /STAT maxbytes 33554432\r\n[\s\S]*STAT num_threads 2\r\n/);
      client.close();
      const items = Array.from({ length: 2000 }, (_, i) => ({ key: `l${i}`, value: Buffer.from(`v${i}`), flags: i, exptime: 0 }));
      await load(a.memrepl.port, items);
      const keys = items.map((i) => i.key);
      // B's memcached is behind a private socket: read it through B's proxy.
      await untilSame(a.memcached.port, b.port, keys, 15000, 'B to follow A');

      const pid = await memcachedPid(b.port);
      process.kill(pid, 'SIGKILL');
      await eventually(async () => (await memcachedPid(b.port).catch(() => pid)) !== pid, 10000, 'memcached to be restarted');
      await untilSame(a.memcached.port, b.port, keys, 20000, 'the new memcached to be refilled');

      const child = await memcachedPid(b.port);
      assert.equal(await b.stop('SIGTERM'), 0);
      assert.equal(alive(child), false, 'memcached stopped with memrepl');
    } finally {
      await b.stop();
      await stopAll(a);
    }
  });

  it("a node whose memcached restarted sends its peer no copy of what it refilled from it; when the peer restarts, the two end with every key either holds, the peer's values", async () => {
    // Refilled from the peer, that memcached holds the peer's state (and writes whose records are in the
    // stream); a copy of it, in set mode from the node with the smaller id, would only put back on the peer
    // its own older values, deletes undone (fault suite, seeds 5 and 9). When the peer's proxy restarts,
    // what its memcached took and it never shipped must reach this node instead: it asks for a copy in set mode
    // (fault suite, seed 9: without a copy either way, the two kept different values). A delete the peer never
    // shipped is undone, as after any proxy restart: this node sends an add-mode copy back (fault suite, seed 1
    // in CI: without it, the key stayed on this node only).
    const rb = await freePort();
    const b = await startNode('b', rb, null);
    const replicationA = await freePort();
    const a = await startMemrepl(0, [
      '--spawn-memcached',
      '--run-dir',
      newRunDir(),
      '-m',
      '32',
      '-X',
      String(replicationA),
      '-x',
      `127.0.0.1:${rb}`,
      '--node-id',
      'a',
    ]);
    const statOfA = async (name: string) => {
      const client = await RawClient.connect(a.port);
      try {
        return new RegExp(`STAT ${name} (.*)\r\n`).exec(await client.request('stats replication\r\n', 'END\r\n'))?.[1] ?? '';
      } finally {
        client.close();
      }
    };
    try {
      const items = Array.from({ length: 500 }, (_, i) => ({ key: `m${i}`, value: Buffer.from(`v${i}`), flags: 0, exptime: 0 }));
      await load(b.memrepl.port, items);
      const keys = items.map((item) => item.key);
      await untilSame(b.memcached.port, a.port, keys, 15000, 'A to follow B');
      const received = Number(await statOfA('copies_received'));
      const pid = await memcachedPid(a.port);
      process.kill(pid, 'SIGKILL');
      await eventually(async () => Number(await statOfA('copies_received').catch(() => '0')) > received, 15000, "A's new memcached refilled by B");
      await untilSame(b.memcached.port, a.port, keys, 15000, 'A to hold B again');
      // A write B's memcached took and B's proxy never shipped (as when it is killed right after).
      await setKey(b.memcached.port, 'm0', 'unshipped');
      await deleteKey(b.memcached.port, 'm1');
      // B's proxy restarts with its memcached intact: each side would reconcile with a copy to the other.
      await b.restartProxy();
      await eventually(async () => Number(await statOfA('copies_received').catch(() => '0')) > received + 1, 15000, "B's reconciling copy to A");
      await eventually(async () => Number(await stat(b, 'copies_received').catch(() => '0')) > 0, 15000, "A's add-mode copy to B");
      await untilSame(b.memcached.port, a.port, keys, 5000, "both hold the same: B's values, and every key");
      assert.match(await getKey(a.port, 'm0'), /unshipped/);
      assert.match(await getKey(b.memcached.port, 'm1'), /v1/, "B's unshipped delete undone");
    } finally {
      await a.stop();
      await stopAll(b);
    }
  });

  it('adopts the memcached a SIGKILLed memrepl left running: same pid, its data kept, no second memcached; restarts it if it dies', async () => {
    const runDir = newRunDir();
    const flags = launcherFlags(runDir, '-m', '32');
    let proxy: Running = await startMemrepl(0, flags);
    try {
      assert.equal((fs.statSync(runDir).mode & 0o777).toString(8), '700');
      const pid = await memcachedPid(proxy.port);
      assert.equal(readPidFile(runDir), pid);
      await setKey(proxy.port, 'survivor', 'kept');

      const port = proxy.port;
      await proxy.stop('SIGKILL');
      assert.ok(alive(pid), 'memcached outlives a memrepl killed with SIGKILL');
      proxy = await startMemrepl(0, flags, port);
      assert.equal(await memcachedPid(port), pid, 'the same memcached serves');
      assert.equal(await getKey(port, 'survivor'), 'VALUE survivor 0 4\r\nkept\r\nEND\r\n');
      assert.match(proxy.output(), new RegExp(`launcher: adopted memcached pid ${pid} from an earlier run`));
      assert.doesNotMatch(proxy.output(), /launcher: started/);
      assert.deepEqual(memcachedsOn(runDir), [pid], 'no second memcached');

      // Not our child any more, but still supervised.
      process.kill(pid, 'SIGKILL');
      await eventually(async () => (await memcachedPid(port).catch(() => pid)) !== pid, 10000, 'the adopted memcached to be restarted');
      const restarted = await memcachedPid(port);
      assert.equal(readPidFile(runDir), restarted);
      assert.deepEqual(memcachedsOn(runDir), [restarted]);
    } finally {
      await proxy.stop();
    }
  });

  it('replaces a leftover memcached that was started with other flags', async () => {
    const runDir = newRunDir();
    let proxy: Running = await startMemrepl(0, launcherFlags(runDir, '-m', '32'));
    try {
      const pid = await memcachedPid(proxy.port);
      const port = proxy.port;
      await proxy.stop('SIGKILL');
      proxy = await startMemrepl(0, launcherFlags(runDir, '-m', '48'), port);
      assert.equal(alive(pid), false, 'the old memcached is stopped before memrepl serves');
      const fresh = await memcachedPid(port);
      assert.notEqual(fresh, pid);
      assert.equal(await maxBytes(port), 48 * 1024 * 1024);
      assert.equal(readPidFile(runDir), fresh);
      assert.match(proxy.output(), new RegExp(`stopping the memcached left by an earlier run: memcached pid ${pid} runs with other flags`));
      assert.deepEqual(memcachedsOn(runDir), [fresh]);
    } finally {
      await proxy.stop();
    }
  });

  it('ignores a stale pid file naming a dead process or an unrelated one, and kills neither', async () => {
    // A pid that was ours to start and is now dead.
    const done = spawn('true');
    const deadPid = done.pid!;
    await new Promise((resolve) => done.once('exit', resolve));
    // An unrelated live process (started by the test, stopped by the test).
    const bystander = spawn('sleep', ['60'], { stdio: 'ignore' });
    const bystanderPid = bystander.pid!;
    try {
      for (const stale of [deadPid, bystanderPid]) {
        const runDir = newRunDir();
        fs.mkdirSync(runDir, { mode: 0o700 });
        fs.writeFileSync(path.join(runDir, 'memcached.pid'), `${stale}\n`);
        fs.writeFileSync(path.join(runDir, 'memcached.sock'), 'not a socket');
        const proxy = await startMemrepl(0, launcherFlags(runDir));
        try {
          const pid = await memcachedPid(proxy.port);
          assert.notEqual(pid, stale);
          assert.equal(readPidFile(runDir), pid);
          assert.match(proxy.output(), new RegExp(`ignoring stale .*memcached.pid: pid ${stale} is not (running|our memcached)`));
        } finally {
          assert.equal(await proxy.stop(), 0);
        }
      }
      assert.ok(alive(bystanderPid), 'an unrelated process named by the pid file is left alone');
    } finally {
      bystander.kill('SIGKILL');
    }
  });

  it('refuses a second memrepl on a run dir a live one owns (exit 2), and the first keeps serving', async () => {
    const runDir = newRunDir();
    const first = await startMemrepl(0, launcherFlags(runDir));
    try {
      const pid = await memcachedPid(first.port);
      await assert.rejects(
        startMemrepl(0, launcherFlags(runDir)),
        new RegExp(`exited \\(2\\)[\\s\\S]*run dir ${runDir} is in use by another memrepl \\(pid ${first.child.pid}\\).*--run-dir.*-p`),
      );
      assert.equal(await memcachedPid(first.port), pid);
      assert.deepEqual(memcachedsOn(runDir), [pid]);
    } finally {
      await first.stop();
    }
  });

  it('SIGTERM stops memcached and removes its socket, the pid files and the default run dir', async () => {
    // A port whose default run dir nobody left behind: memrepl rightly keeps files it did not make.
    let port = await freePort();
    for (let tries = 0; fs.existsSync(defaultRunDir(port)) && tries < 20; tries++) port = await freePort();
    const proxy = await startMemrepl(0, ['--spawn-memcached'], port);
    const runDir = defaultRunDir(proxy.port);
    try {
      assert.deepEqual(fs.readdirSync(runDir).sort(), ['memcached.pid', 'memcached.sock', 'memrepl.pid']);
      assert.equal(readPidFile(runDir, 'memrepl.pid'), proxy.child.pid);
      const pid = await memcachedPid(proxy.port);
      assert.equal(await proxy.stop('SIGTERM'), 0);
      assert.equal(alive(pid), false);
      assert.equal(fs.existsSync(runDir), false);
    } finally {
      await proxy.stop();
    }
  });

  it('memcached flags without --spawn-memcached are a usage error', async () => {
    await assert.rejects(startMemrepl(1, ['-m', '64']), /exited \(2\)[\s\S]*need --spawn-memcached/);
  });
});
