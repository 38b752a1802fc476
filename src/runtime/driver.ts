// One runtime driver interface; `local` runs engines as child processes, `kubernetes` (later)
// as pods through the API server.
import type { ReplicaState } from '../core/types.js';
import type { EngineAdapter, LaunchContext } from '../engines/index.js';

export interface ReplicaLaunchSpec {
  replicaId: string;
  deployment: string;
  index: number;
  engine: EngineAdapter;
  /** Everything the adapter needs but the address, which the driver assigns. */
  launch: Omit<LaunchContext, 'host' | 'port'>;
}

export interface ReplicaStatus {
  replicaId: string;
  deployment: string;
  index: number;
  state: ReplicaState;
  /** Base URL of the engine (http://host:port) while it has one. */
  url: string | null;
  port: number | null;
  pid: number | null;
  restarts: number;
  startedAt: string | null;
  lastError: string | null;
}

export type StatusListener = (status: ReplicaStatus, reason: string, message: string) => void;

export interface RuntimeDriver {
  /** Starts managing a replica: launch, health-check, restart with backoff when it dies. */
  start(spec: ReplicaLaunchSpec): void;
  /** Stops the replica (graceful, then forced) and forgets it. */
  stop(replicaId: string): Promise<void>;
  status(replicaId: string): ReplicaStatus | undefined;
  list(): ReplicaStatus[];
  /** The last `tail` lines of the replica's engine output. */
  logs(deployment: string, index: number, tail: number): Promise<string>;
  onStatus(listener: StatusListener): void;
  /** Stops every replica. */
  shutdown(): Promise<void>;
}
