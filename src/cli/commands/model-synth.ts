// `inferplane model synth`: writes a GGUF model with random weights and a working tokenizer, for
// tests and benchmarks of real engines without downloading a model (src/engines/gguf.ts).
// Other `model` subcommands attach to the same group: see modelCommand().
import { InvalidArgumentError, type Command } from 'commander';
import { PROMPT_WORDS } from '../../bench/workloads.js';
import { synthModel, type SynthProgress } from '../../engines/gguf.js';
import { processIo, type Io } from '../output.js';
import { examples } from './common.js';

/** The `model` command group: the existing one, or a new one (registration order free). */
export function modelCommand(program: Command): Command {
  return (
    program.commands.find((c) => c.name() === 'model') ??
    program.command('model').summary('work with models').description('work with models')
  );
}

interface SynthFlags {
  arch: 'llama';
  hidden: number;
  layers: number;
  heads: number;
  kvHeads?: number;
  ffn: number;
  vocab: number;
  ctx: number;
  type: 'f16' | 'f32';
  seed: number;
  out: string;
  json?: boolean;
}

function intIn(name: string, min: number, max: number) {
  return (v: string): number => {
    const n = Number(v);
    if (v.trim() === '' || !Number.isInteger(n) || n < min || n > max)
      throw new InvalidArgumentError(`${name} must be an integer between ${min} and ${max}`);
    return n;
  };
}

function mb(bytes: number): string {
  return bytes >= 1e9 ? `${(bytes / 1e9).toFixed(2)} GB` : `${(bytes / 1e6).toFixed(1)} MB`;
}

export function registerModelSynth(program: Command, io: Io = processIo): void {
  modelCommand(program)
    .command('synth')
    .summary('write a GGUF model with random weights')
    .description(
      'write a GGUF v3 model with random weights and a SentencePiece-style vocabulary ' +
        '(byte fallback: any text tokenizes) that llama.cpp loads and runs. The data is ' +
        'streamed to the file; a progress line goes to stderr.',
    )
    .option(
      '--arch <arch>',
      'architecture (llama)',
      (v: string) => {
        if (v !== 'llama') throw new InvalidArgumentError('only llama is supported');
        return v;
      },
      'llama',
    )
    .requiredOption('--hidden <n>', 'hidden size (embedding length)', intIn('hidden', 8, 65536))
    .requiredOption('--layers <n>', 'transformer blocks', intIn('layers', 1, 1024))
    .requiredOption('--heads <n>', 'attention heads', intIn('heads', 1, 1024))
    .option('--kv-heads <n>', 'key/value heads (GQA; default: heads)', intIn('kv-heads', 1, 1024))
    .requiredOption('--ffn <n>', 'feed-forward size', intIn('ffn', 1, 1 << 20))
    .requiredOption('--vocab <n>', 'vocabulary size (>= 260)', intIn('vocab', 260, 1 << 20))
    .option('--ctx <n>', 'training context length', intIn('ctx', 16, 1 << 24), 2048)
    .option(
      '--type <type>',
      'weight type: f16 or f32',
      (v: string) => {
        if (v !== 'f16' && v !== 'f32') throw new InvalidArgumentError('type must be f16 or f32');
        return v;
      },
      'f16',
    )
    .option('--seed <n>', 'random seed', intIn('seed', 0, 0xffffffff), 1234)
    .requiredOption('-o, --out <file>', 'the GGUF file to write')
    .option('--json', 'print the result as JSON (path, bytes, params, seconds, MB/s)')
    .addHelpText(
      'after',
      examples(
        'inferplane model synth --hidden 64 --layers 2 --heads 4 --ffn 128 --vocab 512 --out tiny.gguf',
        '# a 7B-shape f16 model (13.5 GB):',
        'inferplane model synth --hidden 4096 --layers 32 --heads 32 --ffn 11008 --vocab 32000 --out 7b.gguf',
      ),
    )
    .action(async (flags: SynthFlags) => {
      const tty = process.stderr.isTTY === true && io === processIo;
      let lastDecile = -1;
      const onProgress = (p: SynthProgress): void => {
        const pct = Math.floor((100 * p.written) / p.total);
        const rate = p.written / 1e6 / Math.max(p.seconds, 1e-3);
        const line = `writing ${flags.out}: ${pct}% ${mb(p.written)} / ${mb(p.total)} (${rate.toFixed(0)} MB/s)`;
        if (tty) io.err(`\r${line}   `);
        else if (Math.floor(pct / 10) !== lastDecile) {
          lastDecile = Math.floor(pct / 10);
          io.err(line + '\n');
        }
      };
      const r = await synthModel(
        flags.out,
        {
          arch: flags.arch,
          hidden: flags.hidden,
          layers: flags.layers,
          heads: flags.heads,
          ...(flags.kvHeads !== undefined ? { kvHeads: flags.kvHeads } : {}),
          ffn: flags.ffn,
          vocab: flags.vocab,
          ctx: flags.ctx,
          type: flags.type,
          seed: flags.seed,
          // One token per word of `inferplane bench`'s synthetic prompts: --isl is prompt tokens.
          words: PROMPT_WORDS,
        },
        onProgress,
      );
      if (tty) io.err('\n');
      if (flags.json) {
        io.out(
          JSON.stringify({
            path: r.path,
            bytes: r.bytes,
            params: r.params,
            tensors: r.tensors,
            seconds: Math.round(r.seconds * 1000) / 1000,
            mbPerSecond: Math.round(r.mbPerSecond),
          }) + '\n',
        );
      } else {
        io.out(
          `wrote ${r.path}: ${mb(r.bytes)}, ${(r.params / 1e6).toFixed(1)}M parameters, ` +
            `${r.tensors} tensors in ${r.seconds.toFixed(1)} s (${r.mbPerSecond.toFixed(0)} MB/s)\n`,
        );
      }
    });
}
