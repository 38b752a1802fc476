// The routing snapshot the overhead bench's gateways serve: one key of one tenant (no limits) and
// two models on the same upstream ports, `bench-rr` (round-robin) and `bench-pa` (prefix-aware).
export const MODELS = { 'round-robin': 'bench-rr', 'prefix-aware': 'bench-pa' };

// The zero-latency upstream's answers (nginx `return 200` in the overhead and instructions benches)
// and the bench key.
export const KEY = 'ip-bench-0123456789abcdef0123456789abcdef';
export const COMPLETION = JSON.stringify({
  id: 'chatcmpl-bench',
  object: 'chat.completion',
  created: 1700000000,
  model: 'bench',
  choices: [
    {
      index: 0,
      message: { role: 'assistant', content: 'Hello! How can I help you today?' },
      finish_reason: 'stop',
    },
  ],
  usage: { prompt_tokens: 12, completion_tokens: 9, total_tokens: 21 },
});
export const METRICS = [
  '# HELP vllm:num_requests_running Number of requests in model execution batches.',
  '# TYPE vllm:num_requests_running gauge',
  'vllm:num_requests_running{model_name="bench"} 0',
  '# HELP vllm:num_requests_waiting Number of requests waiting to be processed.',
  '# TYPE vllm:num_requests_waiting gauge',
  'vllm:num_requests_waiting{model_name="bench"} 0',
  '# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.',
  '# TYPE vllm:kv_cache_usage_perc gauge',
  'vllm:kv_cache_usage_perc{model_name="bench"} 0.0',
  '# TYPE vllm:prefix_cache_queries_total counter',
  'vllm:prefix_cache_queries_total{model_name="bench"} 0',
  '# TYPE vllm:prefix_cache_hits_total counter',
  'vllm:prefix_cache_hits_total{model_name="bench"} 0',
  '# TYPE vllm:cache_config_info gauge',
  'vllm:cache_config_info{block_size="16",num_gpu_blocks="8192"} 1',
  '',
].join('\n');

/** `hashApiKey` is the build's own (dist/core/ids.js), passed in by the caller. */
export function benchSnapshot(key, upstreamPorts, hashApiKey) {
  const tenant = { id: 'tenant-bench', name: 'bench' };
  const createdAt = new Date().toISOString();
  return {
    version: 1,
    keys: [
      {
        hash: hashApiKey(key),
        keyId: 'key-bench',
        role: 'tenant',
        tenantId: tenant.id,
        tenantName: tenant.name,
      },
    ],
    tenants: [{ id: tenant.id, name: tenant.name, limits: {} }],
    models: Object.entries(MODELS).map(([policy, model]) => ({
      model,
      deployment: model,
      tenantId: tenant.id,
      tenantName: tenant.name,
      engine: 'sim',
      createdAt,
      routing: { policy },
      endpoints: upstreamPorts.map((p, i) => ({
        replicaId: `${model}-r${i}`,
        index: i,
        url: `http://127.0.0.1:${p}`,
      })),
    })),
  };
}
