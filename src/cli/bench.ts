// webmoe bench --kernels [--json] [--quick] [--shapes small|v3|all] [--filter NAME] [--runs N] [--max-seconds S] [--no-peers]
// webmoe bench --decode <model> [--prompt TEXT]... [--max-tokens N] [--runs N] [--temperatures 0,0.7,1] [--json] [--quick] [--no-peers] [engine flags: --expert-slots N, --gpu-budget-mib N, ...]
import { runDecodeReport, type DecodeReport } from '../bench/decode_report.ts';
import type { Gpu } from '../gpu/device.ts';
import { openNodeGpu } from '../gpu/node.ts';
import { openCheckpoint } from '../io/checkpoint_files.ts';
import type { TensorInfo } from '../io/safetensors.ts';
import { nodeModelDir } from '../node.ts';
import { createLocalEngine } from '../runtime/engine.ts';
import type { Engine } from '../runtime/types.ts';
import { ENGINE_FLAGS, engineFlags, type EngineFlags } from './engine_args.ts';
import { escapeControls } from './escape.ts';
import { runKernelBench, type ShapeSet } from '../bench/suite.ts';
import { parse, positiveInt, UsageError } from './args.ts';
import { AbortError } from '../errors.ts';
import { abortOnStop } from './stop.ts';

const DEFAULT_DECODE_PROMPTS = ['In the beginning God created', 'And Jesus answered and said unto them,', 'def main():\n    ', 'The LORD is my shepherd;'];

/**
 * Ctrl-C or SIGTERM ends a benchmark between its measurements: the engine unloads, the device is
 * destroyed, no report is printed (a partial one would read as a complete one), and the status is
 * 130 or 143.
 */
export async function benchCommand(argv: string[]): Promise<number> {
  const controller = new AbortController();
  const stops = abortOnStop(controller);
  try {
    await runBench(argv, controller.signal);
  } catch (err) {
    if (!(err instanceof AbortError && controller.signal.aborted)) throw err;
    console.error(`[bench] stopped (${stops.reason}): no report`);
  } finally {
    stops.restore();
  }
  return stops.status();
}

async function runBench(argv: string[], signal: AbortSignal): Promise<void> {
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
      temperatures: { type: 'string' },
      ...ENGINE_FLAGS,
    },
    argv.includes('--decode') ? ['model'] : [],
  );
  if (values.decode) return decodeBench(positionals, values, signal);
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
      signal,
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

/**
 * Greedy decode with and without MTP speculative decoding on one model, and what a step costs
 * (BENCHMARKS.md). The engine runs in this process on a device opened here, so that the step probe
 * sees its steps, its device takes the timestamps, and the copy bandwidth and the TF.js peer are
 * measured on the same device.
 */
async function decodeBench(positionals: string[], values: Record<string, unknown>, signal: AbortSignal): Promise<void> {
  const maxTokens = values['max-tokens'] === undefined ? 64 : positiveInt('max-tokens', values['max-tokens'] as string, 4096);
  const runs = values.runs === undefined ? 1 : positiveInt('runs', values.runs as string, 10);
  const prompts = (values.prompt as string[] | undefined) ?? DEFAULT_DECODE_PROMPTS;
  const temperatures = values.temperatures === undefined ? undefined : temperatureList(values.temperatures as string);
  const flags = engineFlags(values as Parameters<typeof engineFlags>[0]);
  const gpu = await openNodeGpu({ label: 'webmoe-bench' });
  try {
    const { engine, tensors } = await loadOnGpu(positionals[0], { ...flags, signal }, gpu);
    try {
      const report = await runDecodeReport(engine, gpu, {
        prompts,
        maxTokens,
        runs,
        tensors,
        quick: values.quick as boolean | undefined,
        peers: !values['no-peers'],
        temperatures,
        onProgress: (line) => console.error(`[bench] ${line}`),
        signal,
      });
      console.log(values.json ? JSON.stringify(report, null, 2) : formatDecode(report));
    } finally {
      await engine.unload();
    }
  } finally {
    gpu.destroy();
  }
}

/** --temperatures 0,0.7,1: the acceptance figures' temperatures ("none": no figures). */
export function temperatureList(value: string): number[] {
  if (value === 'none') return [];
  const list = value.split(',').map((t) => Number(t.trim()));
  if (list.length === 0 || list.some((t) => !(Number.isFinite(t) && t >= 0))) throw new UsageError(`--temperatures takes numbers >= 0 separated by commas (or none), got "${value}"`);
  return list;
}

/** The engine on `gpu` (it stays ours to destroy), and the checkpoint's tensors for the bytes floor. */
async function loadOnGpu(model: string, flags: EngineFlags & { signal?: AbortSignal }, gpu: Gpu): Promise<{ engine: Engine; tensors: TensorInfo[] }> {
  const started = performance.now();
  const dir = nodeModelDir(model);
  const engine = await createLocalEngine({ gpu, dir, ownsGpu: false, ...flags });
  try {
    const { tensors } = await openCheckpoint(dir);
    const { weightBytes } = await engine.stats();
    console.error(`loaded ${escapeControls(engine.info.name)}: ${(weightBytes / 2 ** 20).toFixed(1)} MiB of weights in ${((performance.now() - started) / 1000).toFixed(1)} s`);
    return { engine, tensors: [...tensors.values()] };
  } catch (err) {
    await engine.unload();
    throw err;
  }
}

/** The decode report as a person reads it. */
export function formatDecode(r: DecodeReport): string {
  const step = (s: DecodeReport['plain']['step']) =>
    `${s.dispatches_per_token.toFixed(1)} dispatches per token (${s.dispatches_per_step} per step, ${s.steps_per_token.toFixed(2)} steps per token), ` +
    `${s.cpu_record_submit_ms.toFixed(2)} ms CPU to record and submit a step, ${s.gpu_ms_per_step === null ? 'no GPU timestamps' : `${s.gpu_ms_per_step.toFixed(2)} ms GPU per step`}`;
  const f = r.bytes_floor;
  const lines = [
    `${r.adapter}`,
    `plain decoding: ${r.plain.tokensPerS.toFixed(2)} tok/s (prefill ${r.plain.prefillTokensPerS.toFixed(1)} tok/s, time to first token ${r.plain.ttftMs.toFixed(0)} ms)`,
    `  step: ${step(r.plain.step)}`,
  ];
  if (r.mtp && r.model) {
    lines.push(
      `MTP speculative: ${r.mtp.tokensPerS.toFixed(2)} tok/s, ${r.mtp.accepted}/${r.mtp.drafted} drafts accepted (${(100 * r.mtp.acceptance).toFixed(1)}%), ${r.mtp.tokensPerStep.toFixed(2)} tokens per step`,
      `  step: ${step(r.mtp.step)}`,
      `model: speed-up = tokens per step / (t2 / t1) = ${r.mtp.tokensPerStep.toFixed(2)} / (${r.model.t2Ms.toFixed(1)} ms / ${r.model.t1Ms.toFixed(1)} ms = ${r.model.t2OverT1.toFixed(2)}) = ${r.model.speedup.toFixed(2)}x (measured: ${r.model.measuredSpeedup.toFixed(2)}x)`,
      ...(r.auto ? [`speculative auto (the default): ${r.auto.tokensPerS.toFixed(2)} tok/s, ${r.auto.overPlain.toFixed(2)}x plain, speculated ${r.auto.speculated} of ${r.auto.requests} requests`] : []),
      ...(r.auto?.policy ? [`  policy: plain step ${r.auto.policy.plainStepMs.toFixed(1)} ms, verify step ${r.auto.policy.verifyStepMs.toFixed(1)} ms (${r.auto.policy.measured}, refreshed by the requests), acceptance ${(100 * r.auto.policy.acceptance).toFixed(0)}% over ${r.auto.policy.verifySteps} verify steps: ${r.auto.policy.pays ? 'pays' : 'does not pay'}`] : []),
      ...(r.bound ? [`bound at batch 1: (1 + a) / (1 + r (1 - o)) = (1 + ${r.bound.acceptance.toFixed(2)}) / (1 + ${r.bound.routed_share.toFixed(2)} x (1 - ${r.bound.overlap.toFixed(2)})) = ${r.bound.bound.toFixed(2)}x (a: acceptance, r: routed experts' share of the bytes, o: experts consecutive tokens share); measured ${r.bound.measured_speedup.toFixed(2)}x`] : []),
      `greedy outputs identical: ${r.identical ? 'yes' : 'NO'}`,
      ...(r.acceptance_by_temperature?.length
        ? ['drafts accepted by temperature (top_p 0.95):', ...r.acceptance_by_temperature.map((a) => `  T=${a.temperature} ${a.drafts.padEnd(7)} ${a.accepted}/${a.drafted} (${(100 * a.acceptance).toFixed(1)}%), ${a.tokensPerS.toFixed(2)} tok/s`)]
        : []),
    );
  } else lines.push('this checkpoint has no MTP layer');
  lines.push(
    `bytes floor: ${(f.bytes_per_token / 2 ** 20).toFixed(2)} MiB of weights per token at ${f.copy_gbps.toFixed(1)} GB/s copy = ${f.floor_ms_per_token.toFixed(3)} ms per token (${f.floor_tokens_per_s.toFixed(0)} tok/s); ` +
      `plain decoding takes ${f.measured_ms_per_token.toFixed(1)} ms, ${f.measured_over_floor.toFixed(0)}x the floor`,
  );
  const o = r.offload;
  if (o) {
    const rate = (x: number | null) => (x === null ? 'n/a' : `${(100 * x).toFixed(1)}%`);
    lines.push(
      `expert offload: ${o.expert_slots} of ${o.n_routed_experts} experts per MoE layer on the GPU; plain decoding: hit rate ${rate(o.hit_rate)}, ${o.misses_per_token.toFixed(2)} misses per token ` +
        `(${(o.uploaded_bytes_per_token / 2 ** 20).toFixed(3)} MiB uploaded), ${o.route_wait_ms_per_token.toFixed(2)} ms per token waiting for the router`,
      `  upload ${o.upload_bandwidth_gb_s.toFixed(2)} GB/s (writeBuffer in chunks of one expert, ${o.expert_bytes} bytes); bytes model: floor ${f.floor_ms_per_token.toFixed(3)} ms + upload ${o.predicted_upload_ms_per_token.toFixed(3)} ms = ` +
        `${o.predicted_ms_per_token.toFixed(3)} ms per token, measured ${o.measured_ms_per_token.toFixed(1)} ms`,
      ...(o.mtp ? [`  MTP speculative: hit rate ${rate(o.mtp.hit_rate)}, ${o.mtp.misses_per_token.toFixed(2)} misses per token (${(o.mtp.uploaded_bytes_per_token / 2 ** 20).toFixed(3)} MiB uploaded), ${o.mtp.route_wait_ms_per_token.toFixed(2)} ms per token waiting for the router`] : []),
    );
  }
  const peer = r.model_peer;
  if (peer && 'skipped' in peer) lines.push(`model-level peer skipped: ${peer.skipped}`);
  else if (peer) lines.push(`model-level peer: ${peer.name}: ${peer.ms_per_token.toFixed(1)} ms per token (${peer.matmuls_per_token} matMuls, f32), ours ${f.measured_ms_per_token.toFixed(1)} ms for the whole step`);
  return lines.join('\n');
}
