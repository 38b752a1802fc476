import { afterEach, describe, expect, it } from 'vitest';
import { runSimFleet, type SimFlags } from '../../src/cli/commands/sim.js';
import type { Io } from '../../src/cli/output.js';
import { run } from '../../src/cli/program.js';
import { startSimFleet, type SimFleet } from '../../src/sim/fleet.js';

const fleets: SimFleet[] = [];

afterEach(async () => {
  await Promise.all(fleets.splice(0).map((f) => f.close()));
});

async function complete(url: string, model = 'llama-3.1-8b'): Promise<Response> {
  return fetch(url + '/v1/completions', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model, prompt: 'hello', max_tokens: 3 }),
  });
}

function memoryIo(): Io & { stdout: string[]; stderr: string[] } {
  const stdout: string[] = [];
  const stderr: string[] = [];
  return {
    stdout,
    stderr,
    out: (t) => stdout.push(t),
    err: (t) => stderr.push(t),
    readStdin: () => Promise.resolve(''),
    env: {},
    now: () => new Date(),
  };
}

describe('sim fleet', () => {
  it('runs replicas on distinct ports; a crash takes down only that replica', async () => {
    const crashed: number[] = [];
    const fleet = await startSimFleet({
      replicas: 3,
      basePort: 0,
      servedModelName: 'fleet-model',
      timeScale: 0.05,
      onReplicaCrash: (r) => crashed.push(r.index),
    });
    fleets.push(fleet);
    expect(fleet.replicas.map((r) => r.index)).toEqual([0, 1, 2]);
    expect(new Set(fleet.replicas.map((r) => r.port)).size).toBe(3);
    for (const r of fleet.replicas) {
      expect(r.url).toBe(`http://127.0.0.1:${r.port}`);
      expect(r.server.replicaIndex).toBe(r.index);
      const res = await complete(r.url, 'fleet-model');
      expect(res.status).toBe(200);
      await res.json();
    }

    const victim = fleet.replicas[1]!;
    const res = await fetch(victim.url + '/admin/faults', {
      method: 'POST',
      body: JSON.stringify({ crash: 'now' }),
    });
    expect(res.status).toBe(200);
    await res.json();
    const t0 = Date.now();
    while (!victim.server.crashed && Date.now() - t0 < 2000)
      await new Promise((r) => setTimeout(r, 5));
    expect(victim.server.crashed).toBe(true);
    expect(crashed).toEqual([1]);
    await expect(fetch(victim.url + '/health')).rejects.toThrow();
    for (const r of [fleet.replicas[0]!, fleet.replicas[2]!]) {
      const ok = await complete(r.url, 'fleet-model');
      expect(ok.status).toBe(200);
      await ok.json();
    }
    await fleet.close(); // closing a crashed replica is fine
  });

  it('gives each replica its own GPU indices in telemetry and its own seed', async () => {
    const fleet = await startSimFleet({ replicas: 2, tp: 2, seed: 10, timeScale: 0.05 });
    fleets.push(fleet);
    const idx = await Promise.all(
      fleet.replicas.map(async (r) => {
        const t = (await (await fetch(r.url + '/telemetry/gpus')).json()) as {
          gpus: { index: number }[];
        };
        return t.gpus.map((g) => g.index);
      }),
    );
    expect(idx).toEqual([
      [0, 1],
      [2, 3],
    ]);
    expect(fleet.replicas.map((r) => r.server.faults.seed)).toEqual([10, 11]);
  });

  it('rejects bad options', async () => {
    await expect(startSimFleet({ replicas: 0 })).rejects.toThrow(/replicas/);
    await expect(startSimFleet({ replicas: 2, basePort: 65535 })).rejects.toThrow(/basePort/);
    await expect(startSimFleet({ replicas: 1, model: 'no-such-model' })).rejects.toThrow();
  });
});

describe('inferplane sim', () => {
  const flags = (over: Partial<SimFlags> = {}): SimFlags => ({
    model: 'llama-3.1-8b',
    gpu: 'H100-80GB',
    replicas: 2,
    basePort: 0,
    host: '127.0.0.1',
    enablePrefixCaching: true,
    timeScale: 0.05,
    ...over,
  });

  it('starts the fleet, prints the URLs as JSON and closes on stop', async () => {
    const io = memoryIo();
    let urls: string[] = [];
    await runSimFleet(flags({ json: true, servedModelName: 'x' }), io, async () => {
      const line = JSON.parse(io.stdout.join('')) as {
        model: string;
        profile: string;
        replicas: { index: number; port: number; url: string }[];
      };
      expect(line.model).toBe('x');
      expect(line.profile).toBe('llama-3.1-8b');
      urls = line.replicas.map((r) => r.url);
      expect(urls).toHaveLength(2);
      for (const u of urls) {
        const res = await complete(u, 'x');
        expect(res.status).toBe(200);
        await res.json();
      }
      return 'test';
    });
    for (const u of urls) await expect(fetch(u + '/health')).rejects.toThrow();
  });

  it('prints human-readable URLs without --json', async () => {
    const io = memoryIo();
    await runSimFleet(flags({ replicas: 1 }), io, () => Promise.resolve('SIGINT'));
    const out = io.stdout.join('');
    expect(out).toMatch(/replica 0 {2}http:\/\/127\.0\.0\.1:\d+\/v1/);
    expect(out).toContain('stopped.');
  });

  it('has help with an example, and rejects bad flags with exit 2', async () => {
    const io = memoryIo();
    expect(await run(['node', 'inferplane', 'sim', '--help'], io)).toBe(0);
    const help = io.stdout.join('');
    expect(help).toContain('--replicas');
    expect(help).toContain('inferplane sim --model llama-3.1-8b --gpu H100-80GB --replicas 4');
    for (const bad of [
      ['--replicas', '0'],
      ['--base-port', '-1'],
      ['--dtype', 'int4'],
      ['--time-scale', '0'],
      ['--faults', '{"errorRate":3}'],
    ]) {
      expect(await run(['node', 'inferplane', 'sim', ...bad], memoryIo()), bad.join(' ')).toBe(2);
    }
  });
});
