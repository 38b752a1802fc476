// An engine is a small interface plus data: adding vLLM, SGLang or TRT-LLM is a short file.
import type { z } from 'zod';

export interface LaunchContext {
  /** The name clients use for the model (the deployment name). */
  servedModelName: string;
  /** The model served (e.g. llama-3.1-8b). */
  model: string;
  host: string;
  port: number;
  /** Index of the replica within its deployment. */
  replicaIndex: number;
  /** GPU indices on the node; empty for CPU replicas. */
  gpus: number[];
  gpuType: string;
  /** Validated engine args (the adapter's own schema). */
  args: Record<string, unknown>;
  /**
   * Local path of the model artifact (a registered model version, fetched into the node cache and
   * verified) when the deployment names one.
   */
  artifactPath?: string;
}

export interface LaunchCommand {
  command: string;
  args: string[];
  env: Record<string, string>;
}

export interface EngineAdapter {
  readonly name: string;
  /** Validates `engine.args` of a deployment spec. */
  readonly argsSchema: z.ZodType<Record<string, unknown>>;
  /** Liveness/readiness path answered 200 when the engine can serve. */
  readonly healthPath: string;
  /** Prometheus metrics path. */
  readonly metricsPath: string;
  /**
   * The engine serves a model file (GGUF, …): a deployment must name a registered model version
   * (`modelVersion`); the engine gets the verified local copy as `artifactPath`.
   */
  readonly requiresModelFile?: boolean;
  /** How long the engine may take to become healthy before the start counts as failed. */
  readonly startTimeoutMs: number;
  /**
   * Whether the engine can serve this model on this GPU type (e.g. the simulator needs a
   * profile for both); returns the bad field, or undefined when it can.
   */
  checkModel?(model: string, gpuType: string): { path: string; message: string } | undefined;
  launch(ctx: LaunchContext): LaunchCommand;
}
