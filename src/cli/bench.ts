// webmoe bench --kernels [--json] [--quick] [--shapes small|v3|all] [--filter NAME] [--runs N] [--max-seconds S] [--no-peers]
// webmoe bench --decode <model> [--prompt TEXT]... [--max-tokens N] [--runs N] [--json]
import { runDecodeBench, type DecodeBenchResult } from '../bench/decode.ts';
import { openNodeGpu } from '../gpu/node.ts';
import { ENGINE_FLAGS, engineFlags, loadEngine } from './engine_args.ts';
import { runKernelBench, type ShapeSet } from '../bench/suite.ts';
import { parse, positiveInt, UsageError } from './args.ts';

const DEFAULT_DECODE_PROMPTS = ['In the beginning God created', 'And Jesus answered and said unto them,', 'def main():\n    ', 'The LORD is my shepherd;'];

export async function benchCommand(argv: string[]): Promise<void> {
  const { values, positionals } = parse(
    argv,
    {
      kernels: { type: 'boolean' },
      decode: { type: 'boolean' },
      prompt: { type: 'string', multiple: true },
      'max-tokens': { type: 'string' },
      json: { type: 'boolean' },
      quick: { type: 'boolean' },
      shapes: { type: 'string' },
      filter: { type: 'string' },
      runs: { type: 'string' },
      'max-seconds': { type: 'string' },
      'no-peers': { type: 'boolean' },
      ...ENGINE_FLAGS,
    },
    argv.includes('--decode') ? ['model'] : [],
  );
  if (values.decode) return decodeBench(positionals, values);
  if (!values.kernels) throw new UsageError('say what to benchmark: --kernels, or --decode <model>');
  const shapes = (values.shapes ?? (values.quick ? 'small' : 'all')) as ShapeSet;
  if (!['small', 'v3', 'all'].includes(shapes)) throw new UsageError(`--shapes must be small, v3 or all, got "${shapes}"`);
  const gpu = await openNodeGpu({ label: 'webmoe-bench' });
  try {
    const report = await runKernelBench(gpu, {
      shapes,
      quick: values.quick as boolean | undefined,
      filter: values.filter as string | undefined,
      runs: values.runs === undefined ? undefined : positiveInt('runs', values.runs as string, 10),
      peers: !values['no-peers'],
      maxSecondsPerCase: values['max-seconds'] === undefined ? undefined : positiveInt('max-seconds', values['max-seconds'] as string, 60),
      // Progress goes to stderr so that --json output stays one object on stdout.
      onProgress: (line) => console.error(`[bench] ${line}`),
    });
    if (values.json) console.log(JSON.stringify(report, null, 2));
    else console.log(formatReport(report));
  } finally {
    gpu.destroy();
  }
}

function formatReport(r: Awaited<ReturnType<typeof runKernelBench>>): string {
  const lines = [`${r.adapter.vendor} ${r.adapter.architecture} (${r.adapter.description}); copy ${r.copy_gbps.toFixed(1)} GB/s, FMA ${r.fma_gflops.toFixed(1)} GFLOP/s`, ''];
  lines.push('kernel                      shape                          ms        GB/s   GFLOP/s  %copy  %FMA');
  for (const k of r.kernels) {
    const shape = Object.entries(k.shape).map(([n, v]) => `${n}=${v}`).join(' ');
    lines.push(`${k.name.padEnd(27)} ${shape.padEnd(30)} ${k.median_ms.toFixed(3).padStart(9)} ${k.gbps.toFixed(2).padStart(8)} ${k.gflops.toFixed(2).padStart(8)} ${(100 * k.copy_fraction).toFixed(1).padStart(5)} ${(100 * k.fma_fraction).toFixed(1).padStart(5)}`);
  }
  if (r.peers.length) {
    lines.push('', 'peer                        shape                          ms (wall)  ours x faster');
    for (const p of r.peers) {
      const shape = Object.entries(p.shape).map(([n, v]) => `${n}=${v}`).join(' ');
      lines.push(`${p.name.padEnd(27)} ${shape.padEnd(30)} ${p.median_ms.toFixed(3).padStart(9)} ${p.speedup_of_ours?.toFixed(2).padStart(8)} (${p.versus})`);
    }
  }
  if (r.fp8_decode_cost.length) {
    lines.push('', 'FP8 decode cost (same GEMM on f32 weights, alternating)   FP8 ms     f32 ms    cost');
    for (const c of r.fp8_decode_cost) {
      const shape = Object.entries(c.shape).map(([n, v]) => `${n}=${v}`).join(' ');
      lines.push(`${`${c.kernel} ${c.variant ?? ''}`.padEnd(27)} ${shape.padEnd(30)} ${c.fp8_median_ms.toFixed(3).padStart(9)} ${c.f32_median_ms.toFixed(3).padStart(9)} ${(100 * c.cost).toFixed(1).padStart(6)}%`);
    }
  }
  return lines.join('\n');
}

/** Greedy decode with and without MTP speculative decoding on one model (BENCHMARKS.md). */
async function decodeBench(positionals: string[], values: Record<string, unknown>): Promise<void> {
  const maxTokens = values['max-tokens'] === undefined ? 64 : positiveInt('max-tokens', values['max-tokens'] as string, 4096);
  const runs = values.runs === undefined ? 1 : positiveInt('runs', values.runs as string, 10);
  const prompts = (values.prompt as string[] | undefined) ?? DEFAULT_DECODE_PROMPTS;
  const engine = await loadEngine(positionals[0], engineFlags(values as Parameters<typeof engineFlags>[0]));
  try {
    const result = await runDecodeBench(engine, { prompts, maxTokens, runs, onProgress: (line) => console.error(`[bench] ${line}`) });
    const stats = await engine.stats();
    if (values.json) console.log(JSON.stringify({ adapter: stats.adapter, model: engine.info.name, prompts, max_tokens: maxTokens, ...result }, null, 2));
    else console.log(formatDecode(result, stats.adapter));
  } finally {
    await engine.unload();
  }
}

function formatDecode(r: DecodeBenchResult, adapter: string): string {
  const lines = [`${adapter}`, `plain decoding: ${r.plain.tokensPerS.toFixed(2)} tok/s (prefill ${r.plain.prefillTokensPerS.toFixed(1)} tok/s, time to first token ${r.plain.ttftMs.toFixed(0)} ms)`];
  if (r.mtp && r.model) {
    lines.push(
      `MTP speculative: ${r.mtp.tokensPerS.toFixed(2)} tok/s, ${r.mtp.accepted}/${r.mtp.drafted} drafts accepted (${(100 * r.mtp.acceptance).toFixed(1)}%), ${r.mtp.tokensPerStep.toFixed(2)} tokens per step`,
      `model: speed-up = tokens per step / (t2 / t1) = ${r.mtp.tokensPerStep.toFixed(2)} / (${r.model.t2Ms.toFixed(1)} ms / ${r.model.t1Ms.toFixed(1)} ms = ${r.model.t2OverT1.toFixed(2)}) = ${r.model.speedup.toFixed(2)}x (measured: ${r.model.measuredSpeedup.toFixed(2)}x)`,
      `greedy outputs identical: ${r.identical ? 'yes' : 'NO'}`,
    );
  } else lines.push('this checkpoint has no MTP layer');
  return lines.join('\n');
}
