// Shared by the bench scripts: runs `inferplane sim --json` as a child process (so the fleet's
// event loop is not the benchmark's) and waits for its ready line.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const BIN = fileURLToPath(new URL('../../bin/inferplane.js', import.meta.url));

/**
 * Starts a simulated fleet. `simArgs` are `inferplane sim` flags (`--json` and `--base-port 0`
 * are added); `nodeArgs` go to node itself (e.g. `--cpu-prof`). Resolves with
 * `{ child, info, exited }`, where `info` is the fleet's JSON line and `exited` resolves with the
 * exit signal or code. The fleet exits when this process dies (its stdin is our pipe).
 */
export async function spawnSimFleet(simArgs, nodeArgs = []) {
  const child = spawn(
    process.execPath,
    [...nodeArgs, BIN, 'sim', '--base-port', '0', '--json', ...simArgs],
    { stdio: ['pipe', 'pipe', 'inherit'], env: { ...process.env, INFERPLANE_PARENT_STDIN: '1' } },
  );
  const exited = new Promise((resolve) => child.once('exit', (code, sig) => resolve(sig ?? code)));
  try {
    const info = await new Promise((resolve, reject) => {
      let buf = '';
      const timer = setTimeout(() => reject(new Error('fleet did not start within 30 s')), 30_000);
      child.stdout.on('data', (d) => {
        buf += d.toString('utf8');
        const nl = buf.indexOf('\n');
        if (nl === -1) return;
        clearTimeout(timer);
        try {
          resolve(JSON.parse(buf.slice(0, nl)));
        } catch (err) {
          reject(err);
        }
      });
      child.once('exit', (code) => reject(new Error(`fleet exited early (${code})`)));
    });
    child.stdout.resume();
    return { child, info, exited };
  } catch (err) {
    child.kill('SIGKILL');
    await exited;
    throw err;
  }
}
