/**
 * A fleet of simulated replicas in ONE process: each replica is its own {@link SimServer} (own
 * engine, own metrics registry, own port), so a router, autoscaler or load test can be pointed at
 * N "engines" without N processes. Replica i listens on `basePort + i` (or on an ephemeral port
 * each when basePort is 0). A simulated crash of one replica tears only that replica down (its
 * sockets are destroyed and its port closed); the others keep serving.
 */
import type { FaultSpec } from './faults.js';
import { createSimServer, type SimServer, type SimServerOptions } from './server.js';

export type SimFleetOptions = Omit<SimServerOptions, 'replicaIndex' | 'onCrash' | 'faults'> & {
  /** Number of replicas (≥ 1). */
  replicas: number;
  /** Port of replica 0; replica i gets basePort + i. 0 = an ephemeral port each. Default 0. */
  basePort?: number;
  /** Address to bind. Default 127.0.0.1. */
  host?: string;
  /** Faults of every replica from the start (per replica at run time: POST /admin/faults). */
  faults?: FaultSpec;
  /** Called after a replica crashed (was torn down by a simulated crash). */
  onReplicaCrash?: (replica: SimFleetReplica, reason: string) => void;
};

export interface SimFleetReplica {
  index: number;
  port: number;
  /** Base URL, e.g. http://127.0.0.1:8100 (no trailing slash). */
  url: string;
  server: SimServer;
}

export interface SimFleet {
  readonly replicas: readonly SimFleetReplica[];
  /** Closes every replica still up (gracefully: in-flight requests are aborted). */
  close(): Promise<void>;
}

function urlHost(host: string): string {
  if (host === '0.0.0.0') return '127.0.0.1';
  if (host === '::') return '[::1]';
  return host.includes(':') ? `[${host}]` : host;
}

export async function startSimFleet(options: SimFleetOptions): Promise<SimFleet> {
  const { replicas: count, basePort = 0, host = '127.0.0.1', onReplicaCrash, ...rest } = options;
  if (!Number.isInteger(count) || count < 1)
    throw new RangeError('startSimFleet: replicas must be a positive integer');
  if (!Number.isInteger(basePort) || basePort < 0 || basePort + count - 1 > 65535)
    throw new RangeError('startSimFleet: basePort must be 0 or leave room for every replica');

  const replicas: SimFleetReplica[] = [];
  const byServer = new Map<SimServer, SimFleetReplica>();
  const close = async () => {
    await Promise.all(replicas.map((r) => r.server.close()));
  };
  try {
    for (let index = 0; index < count; index++) {
      const server = createSimServer({
        ...rest,
        replicaIndex: index,
        ...(rest.seed !== undefined ? { seed: rest.seed + index } : {}),
        onCrash: (srv, reason) => {
          srv.kill();
          const r = byServer.get(srv);
          if (r && onReplicaCrash) onReplicaCrash(r, reason);
        },
      });
      // Created before listening, so a failed listen still gets closed.
      const replica: SimFleetReplica = { index, port: 0, url: '', server };
      replicas.push(replica);
      byServer.set(server, replica);
      replica.port = await server.listen(basePort === 0 ? 0 : basePort + index, host);
      replica.url = `http://${urlHost(host)}:${replica.port}`;
    }
  } catch (err) {
    await close();
    throw err;
  }
  return { replicas, close };
}
