// The whole decode benchmark of one loaded model, as `webmoe bench --decode --json` prints it and
// the benchmark page shows it: tok/s with and without MTP (decode.ts), what a step costs
// (dispatches per token, CPU time to record and submit, GPU time: step_cost.ts), the bytes floor
// (bytes_floor.ts) against the copy bandwidth measured on the same device, and the model-level
// peer (model_peer.ts), and with the experts offloaded the cache's hit rate and uploads per token
// against the upload bandwidth and the bytes model's prediction (offload_report.ts). The engine
// must run on `gpu` (createEngine with `gpu`, in this thread), so that the probe sees its steps
// and its device can take timestamps.

import { throwIfAborted } from '../errors.ts';
import type { Gpu } from '../gpu/device.ts';
import type { TensorInfo } from '../io/safetensors.ts';
import type { Engine } from '../runtime/types.ts';
import { bytesFloor, decodeBytesByKind, type BytesFloor } from './bytes_floor.ts';
import { measureCeilings } from './ceilings.ts';
import { acceptanceByTemperature, runDecodeBench, type AcceptanceAtTemperature, type DecodeBenchResult, type DecodeModeResult } from './decode.ts';
import { timeModelPeer, type ModelPeerResult } from './model_peer.ts';
import { offloadReport, type OffloadReport } from './offload_report.ts';
import { tfjsMatmulPeer } from './peers.ts';
import { consecutiveOverlap, speculationBound, type SpeculationBound } from './speculation_bound.ts';
import { measureStepCost, type StepCost } from './step_cost.ts';
import { measureUploadBandwidth } from './upload_bandwidth.ts';

export interface DecodeReportOptions {
  prompts: (string | number[])[];
  maxTokens: number;
  runs?: number;
  /** The checkpoint's tensors (its safetensors headers), for the bytes floor. */
  tensors: readonly TensorInfo[];
  /** Shorter step-cost runs and ceiling probes. */
  quick?: boolean;
  /** Time the model-level peer (default true). */
  peers?: boolean;
  /** With MTP: the temperatures of the acceptance figures (default decode.ts ACCEPTANCE_TEMPERATURES; empty: none). */
  temperatures?: readonly number[];
  onProgress?: (line: string) => void;
  /** Ends the report with an AbortError between its measurements (the CLI's Ctrl-C / SIGTERM). */
  signal?: AbortSignal;
}

export interface DecodeReport extends Omit<DecodeBenchResult, 'plain' | 'mtp'> {
  adapter: string;
  checkpoint: string;
  weights: string;
  prompts: (string | number[])[];
  max_tokens: number;
  plain: DecodeModeResult & { step: StepCost };
  mtp?: NonNullable<DecodeBenchResult['mtp']> & { step: StepCost };
  /** Plain decoding's step, at the top as issue 19 names the figures. */
  dispatches_per_token: number;
  cpu_record_submit_ms: number;
  gpu_ms_per_step: number | null;
  /** The floor, and plain decoding's measured time per token over it. */
  bytes_floor: BytesFloor & { measured_ms_per_token: number; measured_over_floor: number };
  model_peer?: ModelPeerResult | { skipped: string };
  /** With MTP: the most speculation can gain at batch 1 on this model, beside the measured speed-up (speculation_bound.ts). */
  bound?: SpeculationBound;
  /** With MTP: the share of drafts accepted by temperature, greedy against sampled drafts (decode.ts acceptanceByTemperature). */
  acceptance_by_temperature?: AcceptanceAtTemperature[];
  /** Routed experts in CPU memory with a GPU cache (expertSlots / --expert-slots): hit rate, uploads per token, the prediction; null when every expert is resident. */
  offload: OffloadReport | null;
}

/** Bytes of one repetition of the upload bandwidth measurement. */
const UPLOAD_BYTES = 64 << 20;

export async function runDecodeReport(engine: Engine, gpu: Gpu, options: DecodeReportOptions): Promise<DecodeReport> {
  const log = options.onProgress ?? (() => {});
  const bench = await runDecodeBench(engine, options);
  const { signal } = options;
  const stepOptions = { prompt: options.prompts[0], device: gpu.device, shortTokens: options.quick ? 3 : 8, longTokens: options.quick ? 9 : 32, signal };
  log('counting the dispatches and timing the steps of plain decoding');
  const plainStep = await measureStepCost(engine, { ...stepOptions, speculative: false });
  log(`plain: ${plainStep.dispatches_per_token.toFixed(1)} dispatches per token, ${plainStep.cpu_record_submit_ms.toFixed(2)} ms CPU per step${plainStep.gpu_ms_per_step === null ? '' : `, ${plainStep.gpu_ms_per_step.toFixed(2)} ms GPU per step`}`);
  let mtpStep: StepCost | undefined;
  if (bench.mtp) {
    log('the same with MTP speculative decoding');
    mtpStep = await measureStepCost(engine, { ...stepOptions, speculative: true });
    log(`mtp: ${mtpStep.dispatches_per_token.toFixed(1)} dispatches per token, ${mtpStep.steps_per_token.toFixed(2)} steps per token`);
  }
  throwIfAborted(signal);
  log('measuring the copy bandwidth for the bytes floor');
  const { copyGbps } = await measureCeilings(gpu, { quick: options.quick });
  const bytes = decodeBytesByKind(engine.info.config, options.tensors, engine.info.weights);
  const floor = bytesFloor(bytes.total, copyGbps);
  let bound: SpeculationBound | undefined;
  if (bench.mtp && bench.model) {
    log("measuring how many experts consecutive tokens share (the verify step's two rows)");
    const overlap = await expertOverlap(engine, options.prompts[0], options.maxTokens, signal);
    bound = speculationBound(bench.mtp.acceptance, bytes.routed / bytes.total, overlap, bench.model.measuredSpeedup);
  }
  let acceptance: AcceptanceAtTemperature[] | undefined;
  if (bench.mtp && options.temperatures?.length !== 0) {
    log('the share of drafts accepted by temperature, greedy and sampled drafts');
    acceptance = await acceptanceByTemperature(engine, { prompts: options.prompts, maxTokens: options.maxTokens, temperatures: options.temperatures, onProgress: log, signal });
  }
  const measuredMs = 1000 / bench.plain.tokensPerS;
  const offload = await offloadFigures(engine, gpu, bench, floor.floor_ms_per_token, measuredMs, options);
  let modelPeer: DecodeReport['model_peer'];
  throwIfAborted(signal);
  if (options.peers !== false) {
    log("timing the model-level peer (TF.js, the decode step's matrix products)");
    const peer = await tfjsMatmulPeer(gpu);
    try {
      modelPeer = await timeModelPeer(peer, engine.info.config, options.quick ? 3 : 5);
    } finally {
      peer.dispose();
    }
  }
  const stats = await engine.stats();
  const { plain, mtp, ...rest } = bench;
  return {
    adapter: stats.adapter,
    checkpoint: engine.info.name,
    weights: engine.info.weights,
    prompts: options.prompts,
    max_tokens: options.maxTokens,
    ...rest,
    plain: { ...plain, step: plainStep },
    ...(mtp && mtpStep ? { mtp: { ...mtp, step: mtpStep } } : {}),
    dispatches_per_token: plainStep.dispatches_per_token,
    cpu_record_submit_ms: plainStep.cpu_record_submit_ms,
    gpu_ms_per_step: plainStep.gpu_ms_per_step,
    bytes_floor: { ...floor, measured_ms_per_token: measuredMs, measured_over_floor: measuredMs / floor.floor_ms_per_token },
    ...(modelPeer ? { model_peer: modelPeer } : {}),
    ...(bound ? { bound } : {}),
    ...(acceptance ? { acceptance_by_temperature: acceptance } : {}),
    offload,
  };
}

/** The offload's figures, with the upload bandwidth measured now in chunks of one expert; null when every expert is resident. */
async function offloadFigures(engine: Engine, gpu: Gpu, bench: DecodeBenchResult, floorMs: number, measuredMs: number, options: DecodeReportOptions): Promise<OffloadReport | null> {
  const stats = (await engine.stats()).offload;
  if (!stats || !bench.plain.offload) return null;
  throwIfAborted(options.signal);
  const { n_routed_experts } = engine.info.config;
  // Every offloaded layer holds all n_routed_experts in CPU stacks of whole, 4-byte aligned experts.
  const expertBytes = stats.hostBytes / (stats.layers.length * n_routed_experts);
  const bytes = Math.min(UPLOAD_BYTES, gpu.device.limits.maxBufferSize - (gpu.device.limits.maxBufferSize % 4));
  options.onProgress?.(`measuring the upload bandwidth (writeBuffer of ${(bytes / 2 ** 20).toFixed(0)} MiB in chunks of one expert, ${expertBytes} bytes)`);
  // Cheap (tens of ms on a CPU adapter) and noisy on a busy machine: five repetitions, quick or not.
  const upload = await measureUploadBandwidth(gpu.device, { bytes, chunkBytes: expertBytes, runs: 5 });
  return offloadReport({
    expertSlots: stats.expertSlots,
    nRoutedExperts: n_routed_experts,
    expertBytes,
    plain: { tally: bench.plain.offload, tokens: bench.plain.generated, msPerToken: measuredMs },
    ...(bench.mtp?.offload ? { mtp: { tally: bench.mtp.offload, tokens: bench.mtp.generated } } : {}),
    uploadGbps: upload.gbps,
    floorMsPerToken: floorMs,
  });
}

/** The experts each token of one greedy plain run chose, as the share consecutive tokens have in common. */
async function expertOverlap(engine: Engine, prompt: string | number[], maxTokens: number, signal?: AbortSignal): Promise<number> {
  const tokens = [];
  for await (const chunk of engine.generate(prompt, { temperature: 0, maxTokens: Math.max(maxTokens, 8), ignoreEos: true, speculative: false, experts: true, signal })) {
    tokens.push(...(chunk.experts ?? []));
  }
  return consecutiveOverlap(tokens);
}
