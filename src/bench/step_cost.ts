// What one decode step costs, measured around engine.generate with the step probe: dispatches and
// steps per generated token, the CPU time to record and submit a step, and its GPU time.
//
// The prefill must not count, and nothing in the engine's API says which submit is which. So the
// same greedy request runs twice, `shortTokens` and `longTokens` long: greedy decoding repeats
// itself, so the long run's first steps are the short run's, and the steps after them are decode
// steps only. Per-token figures are the differences of the two runs over the extra tokens; step
// figures are medians over the extra steps. A third long run with timestamps gives the GPU time.

import type { Engine } from '../runtime/types.ts';
import { median } from '../gpu/timing.ts';
import { installStepProbe, type StepRecord } from './step_probe.ts';

export interface StepCost {
  /** Compute dispatches per generated token (the fixed per-token cost issue 19 counts). */
  dispatches_per_token: number;
  /**
   * Submits per generated token: 1 without speculation, 1 / (1 + acceptance) with it. With the
   * experts offloaded a step is several submits (each offloaded layer stops at its router, each
   * pass over its experts is one), so this and the per-step figures below are then per submit.
   */
  steps_per_token: number;
  dispatches_per_step: number;
  /** Median CPU time from a step's first WebGPU call to the end of its submit. */
  cpu_record_submit_ms: number;
  /** Median GPU time of a step (first pass start to last pass end); null without timestamp queries. */
  gpu_ms_per_step: number | null;
  /** The decode steps the figures come from. */
  steps_measured: number;
}

export interface StepCostOptions {
  prompt: string | number[];
  speculative: boolean;
  shortTokens?: number;
  longTokens?: number;
  /** The engine's device, for timestamps (without it, gpu_ms_per_step is null). */
  device?: GPUDevice;
  /** Ends the measurement with an AbortError (the bench's Ctrl-C). */
  signal?: AbortSignal;
}

/** Runs one greedy request under a probe; returns the steps that carried dispatches and the token count. */
async function probedRun(engine: Engine, options: StepCostOptions, maxTokens: number, device?: GPUDevice): Promise<{ steps: StepRecord[]; tokens: number }> {
  const probe = installStepProbe({ device });
  let tokens = 0;
  try {
    for await (const chunk of engine.generate(options.prompt, { temperature: 0, maxTokens, ignoreEos: true, speculative: options.speculative, signal: options.signal })) tokens += chunk.ids.length;
  } finally {
    probe.uninstall();
  }
  await probe.settled();
  return { steps: probe.records.filter((r) => r.dispatches > 0), tokens };
}

export async function measureStepCost(engine: Engine, options: StepCostOptions): Promise<StepCost> {
  const shortTokens = options.shortTokens ?? 8;
  const longTokens = options.longTokens ?? 32;
  if (!(longTokens > shortTokens && shortTokens >= 2)) throw new Error(`measureStepCost needs 2 <= shortTokens < longTokens, got ${shortTokens} and ${longTokens}`);
  const short = await probedRun(engine, options, shortTokens);
  const long = await probedRun(engine, options, longTokens);
  const extraTokens = long.tokens - short.tokens;
  const decodeSteps = long.steps.slice(short.steps.length);
  const prefix = long.steps.slice(0, short.steps.length);
  // The premise of the method: the long run began as the short one did, step for step.
  if (extraTokens <= 0 || decodeSteps.length === 0 || prefix.some((s, i) => s.dispatches !== short.steps[i].dispatches)) {
    throw new Error(`the two greedy runs did not repeat each other (${short.tokens} then ${long.tokens} tokens, ${short.steps.length} then ${long.steps.length} steps): the step figures cannot be separated from the prefill`);
  }
  const sum = (steps: StepRecord[]) => steps.reduce((n, s) => n + s.dispatches, 0);
  let gpuMs: number | null = null;
  if (options.device?.features.has('timestamp-query')) {
    const timed = await probedRun(engine, options, longTokens, options.device);
    const spans = timed.steps.slice(short.steps.length).flatMap((s) => (s.gpuMs === undefined ? [] : [s.gpuMs]));
    if (spans.length > 0) gpuMs = median(spans);
  }
  return {
    dispatches_per_token: (sum(long.steps) - sum(short.steps)) / extraTokens,
    steps_per_token: decodeSteps.length / extraTokens,
    dispatches_per_step: median(decodeSteps.map((s) => s.dispatches)),
    cpu_record_submit_ms: median(decodeSteps.map((s) => s.cpuMs)),
    gpu_ms_per_step: gpuMs,
    steps_measured: decodeSteps.length,
  };
}
