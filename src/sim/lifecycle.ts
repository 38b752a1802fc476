// How a simulator process learns it should stop: SIGINT/SIGTERM, or — when started by the
// platform with INFERPLANE_PARENT_STDIN=1 — the end of its stdin pipe, which happens when the
// platform dies (even by SIGKILL). Shared by `dist/sim/main.js` and `inferplane sim`.

export interface StopRequest {
  /** Resolves with the reason of the first stop request. */
  readonly stopped: Promise<string>;
  /** Removes the signal and stdin listeners. */
  readonly dispose: () => void;
}

export function onStopRequest(
  env: NodeJS.ProcessEnv,
  opts: { onSecondSignal?: () => void } = {},
): StopRequest {
  let resolveStop!: (reason: string) => void;
  const stopped = new Promise<string>((r) => {
    resolveStop = r;
  });
  let signals = 0;
  const onSignal = (sig: string): void => {
    signals++;
    if (signals > 1) opts.onSecondSignal?.();
    resolveStop(sig);
  };
  const onInt = (): void => onSignal('SIGINT');
  const onTerm = (): void => onSignal('SIGTERM');
  const onStdinEnd = (): void => resolveStop('parent stdin closed');
  process.on('SIGINT', onInt);
  process.on('SIGTERM', onTerm);
  const guard = env.INFERPLANE_PARENT_STDIN === '1';
  if (guard) {
    process.stdin.on('end', onStdinEnd);
    process.stdin.on('close', onStdinEnd);
    process.stdin.on('error', onStdinEnd);
    process.stdin.resume();
  }
  return {
    stopped,
    dispose: () => {
      process.off('SIGINT', onInt);
      process.off('SIGTERM', onTerm);
      if (guard) {
        process.stdin.off('end', onStdinEnd);
        process.stdin.off('close', onStdinEnd);
        process.stdin.off('error', onStdinEnd);
        process.stdin.pause();
      }
    },
  };
}
