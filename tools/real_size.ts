// The engine on checkpoints of real dimensions, in Node: each preset (tools/checkpoint/presets.ts
// `moonlight`, `v3-dims`) is generated tensor by tensor into a temporary folder (deleted after,
// also on failure or Ctrl-C), loaded with weights 'fp8' and then 'bf16', and run for a short
// greedy generation on token ids. It prints the load time, the weight bytes on the GPU, prefill
// and decode tok/s, and checks that the logits are finite and the ids valid. Not part of npm test:
//   npm run test:real-size -- [--preset moonlight|v3-dims|v2-lite|all] [--json] [--weights fp8,bf16]
//     [--prompt N] [--tokens N] [--layers N] [--experts N] [--set KEY=JSON]... [--seed S] [--max-shard-gib G]
//     [--max-binding-mib N] [--expert-slots N[,N...]] [--keep] [--force]
// --expert-slots N runs each mode again with the routed experts in CPU memory and N per MoE layer
// on the GPU (src/model/expert_offload.ts), once per N listed: its ids must equal the resident run's.
// Tensors over the adapter's storage binding limit (or --max-binding-mib) are split over several
// buffers, as the engine does; a preset the loader would still refuse (a tensor that cannot be
// split small enough) is skipped before generation; --force tries anyway.

import { mkdtempSync, rmSync, statfsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { UnsupportedConfigError, WebmoeError } from '../src/errors.ts';
import { openNodeGpu } from '../src/gpu/node.ts';
import { measureCeilings } from '../src/bench/ceilings.ts';
import type { TensorInfo } from '../src/io/safetensors.ts';
import { placeWeights, plannedBindingLimit, smallestWeightBinding, tensorsOnGpu, weightBytesOnGpu, WEIGHT_MODES, type WeightMode } from '../src/model/load_weights.ts';
import { countParameters, expectedTensors } from '../src/model/weights.ts';
import { createNodeEngine } from '../src/node.ts';
import { planCheckpoint, type CheckpointLayout } from './checkpoint/layout.ts';
import { PRESETS, REAL_SIZE_PRESETS } from './checkpoint/presets.ts';
import { stderrProgress, writeCheckpointStreaming } from './checkpoint/stream.ts';

interface Run {
  weights: WeightMode;
  /** Routed experts offloaded, this many per layer on the GPU. */
  expertSlots?: number;
  /** Offloaded runs: hits / (hits + misses), and MiB uploaded per generated token. */
  hitRate?: number;
  uploadedMibPerToken?: number;
  status: 'ok' | 'failed' | 'unsupported' | 'skipped';
  reason?: string;
  loadS?: number;
  weightBytes?: number;
  /** What tensorsOnGpu / placeWeights (the loader's own plan) say the weights take. */
  plannedWeightBytes: number;
  /** Buffers that hold a piece of a tensor split over several (0: nothing split). */
  plannedPieces?: number;
  /** The smallest storage binding the loader could lay these weights out under, and the tensor that sets it. */
  smallestBinding?: { bytes: number; tensor: string };
  /** Weight bytes one decode step reads: every tensor but the embeddings and the MTP layer, routed experts top-k of E. */
  bytesPerToken?: number;
  /** What decode could reach if it only read those bytes at the adapter's copy bandwidth. */
  copyBoundTokPerS?: number;
  prefillTokPerS?: number;
  decodeTokPerS?: number;
  ttftMs?: number;
  ids?: number[];
  logitsFinite?: boolean;
  /** Informational: the first generated id is the argmax of the logits of the prompt. */
  argmaxMatches?: boolean;
}

interface PresetReport {
  preset: string;
  parameters: number;
  mtpParameters: number;
  files: number;
  diskBytes: number;
  generateS?: number;
  skipped?: string;
  runs: Run[];
}

const { values } = parseArgs({
  options: {
    preset: { type: 'string', default: 'moonlight' },
    weights: { type: 'string', default: WEIGHT_MODES.join(',') },
    prompt: { type: 'string', default: '8' },
    tokens: { type: 'string', default: '4' },
    layers: { type: 'string' },
    experts: { type: 'string' },
    set: { type: 'string', multiple: true, default: [] },
    seed: { type: 'string', default: '0' },
    'max-shard-gib': { type: 'string', default: '2' },
    'max-binding-mib': { type: 'string' },
    'expert-slots': { type: 'string' },
    json: { type: 'boolean', default: false },
    keep: { type: 'boolean', default: false },
    force: { type: 'boolean', default: false },
  },
});
const presets = values.preset === 'all' ? [...REAL_SIZE_PRESETS] : values.preset.split(',');
const modes = values.weights.split(',') as WeightMode[];
for (const p of presets) if (!PRESETS[p]) usage(`unknown preset "${p}" (${Object.keys(PRESETS).join(', ')} or all)`);
for (const m of modes) if (!WEIGHT_MODES.includes(m)) usage(`unknown weights "${m}" (${WEIGHT_MODES.join(', ')})`);
const promptLength = count('prompt');
const maxBindingMib = values['max-binding-mib'] === undefined ? undefined : Number(values['max-binding-mib']);
if (maxBindingMib !== undefined && !(maxBindingMib > 0)) usage(`--max-binding-mib must be a positive number, got "${values['max-binding-mib']}"`);
const newTokens = count('tokens');
const expertSlots = values['expert-slots'] === undefined ? [] : values['expert-slots'].split(',').map(Number);
if (!expertSlots.every((n) => Number.isInteger(n) && n >= 1)) usage(`--expert-slots takes positive integers separated by commas, got "${values['expert-slots']}"`);

const workDirs = new Set<string>();
const cleanUp = () => {
  for (const d of workDirs) if (!values.keep) rmSync(d, { recursive: true, force: true });
  workDirs.clear();
};
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    cleanUp();
    process.exit(130);
  });
}

const reports: PresetReport[] = [];
let adapter = '';
let copyGbps = 0;
try {
  const gpu = await openNodeGpu();
  adapter = [gpu.adapter.vendor, gpu.adapter.architecture, gpu.adapter.description].filter(Boolean).join(' ');
  const largestBinding = plannedBindingLimit(gpu.adapter.limits, maxBindingMib === undefined ? undefined : Math.floor(maxBindingMib * 2 ** 20));
  copyGbps = (await measureCeilings(gpu, { quick: true })).copyGbps;
  gpu.destroy();
  for (const preset of presets) reports.push(await runPreset(preset, largestBinding));
} finally {
  cleanUp();
}
print(reports);
const failed = reports.some((r) => r.runs.some((run) => run.status === 'failed'));
process.exit(failed ? 1 : 0);

async function runPreset(preset: string, largestBinding: number): Promise<PresetReport> {
  const raw: Record<string, unknown> = { ...PRESETS[preset] };
  if (values.layers) raw.num_hidden_layers = Number(values.layers);
  if (values.experts) raw.n_routed_experts = Number(values.experts);
  for (const assignment of values.set) {
    const eq = assignment.indexOf('=');
    if (eq <= 0) usage(`--set takes KEY=JSON, got "${assignment}"`);
    raw[assignment.slice(0, eq)] = JSON.parse(assignment.slice(eq + 1));
  }
  const maxShardBytes = Number(values['max-shard-gib']) * 2 ** 30;
  const layout = planCheckpoint(raw, { maxShardBytes });
  const params = countParameters(layout.config);
  const report: PresetReport = {
    preset,
    parameters: params.total,
    mtpParameters: params.mtp,
    files: layout.files.length,
    diskBytes: layout.fileBytes,
    runs: modes.flatMap((weights): Run[] => [{ weights, status: 'skipped', plannedWeightBytes: 0 }, ...expertSlots.map((n) => ({ weights, expertSlots: n, status: 'skipped' as const, plannedWeightBytes: 0 }))]),
  };
  for (const run of report.runs) {
    if (layout.config.quantization_config !== null && run.weights !== report.runs[0].weights) {
      run.reason = `an FP8 release is FP8 on the GPU in every mode: the ${report.runs[0].weights} run is the ${run.weights} run`;
      continue;
    }
    const plan = plannedGpu(layout, run.weights, largestBinding);
    run.plannedWeightBytes = plan.bytes;
    run.plannedPieces = plan.pieces;
    run.smallestBinding = plan.smallestBinding;
    run.bytesPerToken = plan.bytesPerToken;
    run.copyBoundTokPerS = copyGbps > 0 ? (copyGbps * 1e9) / plan.bytesPerToken : undefined;
    if (plan.refused && !values.force) run.reason = `the loader refuses it before reading a byte: ${plan.refused}`;
  }
  if (report.runs.every((r) => r.reason)) {
    report.skipped = `not generated: ${report.runs[0].reason}`;
    return report;
  }
  const free = statfsSync(tmpdir());
  if (free.bavail * free.bsize < layout.fileBytes) {
    report.skipped = `not generated: ${gib(layout.fileBytes)} needed, ${gib(free.bavail * free.bsize)} free in ${tmpdir()}`;
    return report;
  }

  const dir = mkdtempSync(join(tmpdir(), `webmoe-real-size-${preset}-`));
  workDirs.add(dir);
  try {
    const seed = Number(values.seed);
    const written = await writeCheckpointStreaming(dir, { config: raw, seed, maxShardBytes, onProgress: stderrProgress(`generate ${preset}`) });
    report.generateS = written.seconds;
    for (const run of report.runs) if (!run.reason) await runMode(dir, layout, run);
    // An offloaded run must give its resident run's ids.
    for (const run of report.runs) {
      const resident = report.runs.find((r) => r.weights === run.weights && r.expertSlots === undefined);
      if (run.expertSlots && run.status === 'ok' && resident?.ids && run.ids?.join() !== resident.ids.join()) {
        run.status = 'failed';
        run.reason = `offloaded ids ${run.ids?.join(' ')} differ from the resident ${resident.ids.join(' ')}`;
      }
    }
  } finally {
    if (!values.keep) rmSync(dir, { recursive: true, force: true });
    else process.stderr.write(`[real-size] kept ${dir}\n`);
    workDirs.delete(dir);
  }
  return report;
}

/** Load, logits of the prompt, a greedy generation; the engine is unloaded whatever happens. */
async function runMode(dir: string, layout: CheckpointLayout, run: Run): Promise<void> {
  const vocab = layout.config.vocab_size;
  const ids = Array.from({ length: promptLength }, (_, i) => (i * 7919 + 13) % vocab);
  let lastReport = 0;
  const started = performance.now();
  try {
    const engine = await createNodeEngine({
      model: dir,
      weights: run.weights,
      maxBindingMib,
      expertSlots: run.expertSlots,
      maxContext: Math.min(layout.config.max_position_embeddings, 256),
      onProgress: (p) => {
        if (p.phase !== 'weights' || performance.now() - lastReport < 5000) return;
        lastReport = performance.now();
        process.stderr.write(`[load ${run.weights}] ${gib(p.bytesDone)} / ${gib(p.bytesTotal)} ${p.file ?? ''}\n`);
      },
    });
    try {
      run.loadS = (performance.now() - started) / 1000;
      run.weightBytes = (await engine.stats()).weightBytes;
      const [logits] = await engine.logits(ids);
      run.logitsFinite = logits.length === vocab && logits.every(Number.isFinite);
      const generated: number[] = [];
      for await (const chunk of engine.generate(ids, { maxTokens: newTokens, temperature: 0, ignoreEos: true, speculative: false })) {
        generated.push(...chunk.ids);
        if (chunk.done) {
          run.prefillTokPerS = chunk.done.stats.prefillTokensPerS;
          run.decodeTokPerS = chunk.done.stats.decodeTokensPerS;
          run.ttftMs = chunk.done.stats.ttftMs;
        }
      }
      run.ids = generated;
      const offload = (await engine.stats()).offload;
      if (offload) {
        run.hitRate = offload.expertHits / Math.max(1, offload.expertHits + offload.expertMisses);
        run.uploadedMibPerToken = offload.uploadedBytes / 2 ** 20 / (promptLength + generated.length);
      }
      run.argmaxMatches = generated[0] === argmax(logits);
      const idsValid = generated.length === newTokens && generated.every((id) => Number.isInteger(id) && id >= 0 && id < vocab);
      run.status = run.logitsFinite && idsValid ? 'ok' : 'failed';
      if (!run.logitsFinite) run.reason = 'logits not finite';
      else if (!idsValid) run.reason = `generated ids not ${newTokens} valid ids: ${generated.join(' ')}`;
    } finally {
      await engine.unload();
    }
  } catch (err) {
    // A config the engine does not run is reported as such; any other error fails the script.
    run.status = err instanceof UnsupportedConfigError ? 'unsupported' : 'failed';
    run.reason = err instanceof WebmoeError ? err.message : String(err instanceof Error ? (err.stack ?? err) : err);
  }
}

/** The GPU bytes of a mode and its split pieces at the binding limit, or why the loader would refuse it, from the loader's own functions. */
function plannedGpu(layout: CheckpointLayout, mode: WeightMode, limit: number): { bytes: number; pieces: number; bytesPerToken: number; smallestBinding: { bytes: number; tensor: string }; refused?: string } {
  const infos: TensorInfo[] = layout.tensors.map((t) => ({ ...t, byteOffset: layout.fileOf.get(t.name)!.offsets.get(t.name)!, file: layout.fileOf.get(t.name)!.name }));
  const { onGpu } = tensorsOnGpu(infos, expectedTensors(layout.config), mode);
  const bytes = weightBytesOnGpu(onGpu);
  // A decode step without speculation: one row of the embedding, the MTP layer not at all, and
  // num_experts_per_tok of each layer's n_routed_experts (distinct experts: the most it reads).
  const c = layout.config;
  const mtp = c.mtp_layer_index === null ? undefined : `model.layers.${c.mtp_layer_index}.`;
  let bytesPerToken = 0;
  for (const t of onGpu) {
    if (t.name.endsWith('embed_tokens.weight') || (mtp && t.name.startsWith(mtp))) continue;
    bytesPerToken += /\.mlp\.experts\.\d+\./.test(t.name) ? (t.byteLength * c.num_experts_per_tok) / c.n_routed_experts : t.byteLength;
  }
  const smallestBinding = smallestWeightBinding(onGpu);
  try {
    return { bytes, bytesPerToken, smallestBinding, pieces: placeWeights(onGpu, limit).filter((wb) => wb.piece).length };
  } catch (err) {
    if (err instanceof WebmoeError) return { bytes, bytesPerToken, smallestBinding, pieces: 0, refused: err.message };
    throw err;
  }
}

function print(all: PresetReport[]): void {
  if (values.json) {
    console.log(JSON.stringify({ adapter, copyGbps, promptLength, newTokens, presets: all }, null, 2));
    return;
  }
  console.log(`adapter: ${adapter} (copy bandwidth ${copyGbps.toFixed(1)} GB/s); ${promptLength} prompt ids, ${newTokens} new tokens, greedy, no speculative decoding`);
  for (const r of all) {
    const generated = r.generateS === undefined ? '' : `, generated in ${r.generateS.toFixed(0)} s`;
    console.log(`\n${r.preset}: ${(r.parameters / 1e9).toFixed(2)}B parameters (+${(r.mtpParameters / 1e9).toFixed(2)}B MTP), ${size(r.diskBytes)} in ${r.files} file(s)${generated}`);
    if (r.skipped) {
      console.log(`  ${r.skipped}`);
      continue;
    }
    const rows = [['weights', 'experts', 'status', 'load s', 'on GPU', 'planned', 'pieces', 'read/token', 'copy-bound tok/s', 'prefill tok/s', 'decode tok/s', 'ttft ms', 'ids', 'argmax = first']];
    for (const run of r.runs) {
      rows.push([
        run.weights,
        run.expertSlots ? `${run.expertSlots}/layer (hits ${fixed(run.hitRate, 2)}, ${fixed(run.uploadedMibPerToken, 1)} MiB/token)` : 'resident',
        run.status,
        fixed(run.loadS, 1),
        run.weightBytes === undefined ? '-' : size(run.weightBytes),
        size(run.plannedWeightBytes),
        String(run.plannedPieces ?? '-'),
        run.bytesPerToken === undefined ? '-' : size(run.bytesPerToken),
        fixed(run.copyBoundTokPerS, 2),
        fixed(run.prefillTokPerS, 2),
        fixed(run.decodeTokPerS, 2),
        fixed(run.ttftMs, 0),
        run.ids?.join(' ') ?? '-',
        run.argmaxMatches === undefined ? '-' : String(run.argmaxMatches),
      ]);
    }
    const widths = rows[0].map((_, c) => Math.max(...rows.map((row) => row[c].length)));
    for (const row of rows) console.log('  ' + row.map((cell, c) => cell.padEnd(widths[c])).join('  '));
    for (const run of r.runs) if (run.reason) console.log(`  ${run.weights}${run.expertSlots ? ` (${run.expertSlots} experts per layer)` : ''}: ${run.reason}`);
    for (const run of r.runs) if (run.smallestBinding) console.log(`  ${run.weights}: loads with storage bindings down to ${size(run.smallestBinding.bytes)} (${run.smallestBinding.tensor})`);
    const [a, b] = r.runs.filter((run) => !run.expertSlots);
    if (a?.ids && b?.ids) console.log(`  fp8 and bf16 ids ${a.ids.join() === b.ids.join() ? 'agree' : 'differ (random weights: quantisation may move a greedy choice)'}`);
  }
}

function argmax(row: Float32Array): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  return best;
}

function count(name: 'prompt' | 'tokens'): number {
  const n = Number(values[name]);
  if (!Number.isInteger(n) || n < 1) usage(`--${name} must be a positive integer, got "${values[name]}"`);
  return n;
}

function usage(message: string): never {
  console.error(`error: ${message}\nusage: npm run test:real-size -- [--preset ${REAL_SIZE_PRESETS.join('|')}|all] [--json] [--weights fp8,bf16] [--prompt N] [--tokens N] [--layers N] [--experts N] [--set KEY=JSON]... [--seed S] [--max-shard-gib G] [--max-binding-mib N] [--expert-slots N[,N...]] [--keep] [--force]`);
  process.exit(2);
}

function fixed(x: number | undefined, digits: number): string {
  return x === undefined ? '-' : x.toFixed(digits);
}

/** GiB from 1 GiB up, else MiB. */
function size(bytes: number): string {
  return bytes >= 2 ** 30 ? gib(bytes) : mib(bytes);
}

function mib(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}

function gib(bytes: number): string {
  return `${(bytes / 2 ** 30).toFixed(2)} GiB`;
}
