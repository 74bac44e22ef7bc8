/**
 * docker-compose.yml, judged by docker-compose itself (v1 needs no engine to
 * read a file): valid alone and with each of its profiles, and every file it
 * mounts, builds from or hands over as a secret is in the repository.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { parse as parseYaml } from 'yaml';

const ROOT = path.join(__dirname, '..', '..');
const FILE = path.join(ROOT, 'docker-compose.yml');

function compose(args: string[]): string {
  const run = spawnSync('docker-compose', ['--project-directory', ROOT, '-f', FILE, ...args], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(run.status, 0, `docker-compose ${args.join(' ')}: ${run.error?.message ?? run.stderr}`);
  return run.stdout;
}

interface Service {
  profiles?: string[];
  volumes?: Array<string | { type: string; source: string }>;
  build?: { context: string; dockerfile?: string };
}

/** Every profile a service of the file names. */
function profiles(): string[] {
  const services = parseYaml(fs.readFileSync(FILE, 'utf8')).services as Record<string, Service>;
  return [...new Set(Object.values(services).flatMap((service) => service.profiles ?? []))].sort();
}

describe('docker-compose.yml', () => {
  it('is valid alone and with each profile (docker-compose config -q)', () => {
    const all = profiles();
    assert.ok(all.length > 0, 'the file has profiles');
    compose(['config', '-q']);
    for (const profile of all) compose(['--profile', profile, 'config', '-q']);
  });

  it('mounts, builds from and hands over only files that are in the repository', () => {
    const resolved = parseYaml(compose([...profiles().flatMap((profile) => ['--profile', profile]), 'config']));
    const needed: string[] = [];
    for (const service of Object.values(resolved.services as Record<string, Service>)) {
      for (const volume of service.volumes ?? []) {
        const source = typeof volume === 'string' ? volume.split(':')[0] : volume.type === 'bind' ? volume.source : null;
        if (source?.startsWith('/')) needed.push(source);
      }
      if (service.build) needed.push(path.join(service.build.context, service.build.dockerfile ?? 'Dockerfile'));
    }
    for (const secret of Object.values((resolved.secrets ?? {}) as Record<string, { file?: string }>)) if (secret.file) needed.push(secret.file);
    assert.ok(needed.length >= 5, `files found: ${needed.join(', ')}`);
    const missing = needed.filter((file) => !fs.existsSync(file) || !path.resolve(file).startsWith(ROOT + path.sep));
    assert.deepEqual(missing, [], 'files outside the repository or missing');
  });
});
