// The decode benchmark: tokens per second of greedy generation with and without MTP speculative
// decoding, and with speculative 'auto' (the default: speculate where it pays), in the same run on
// the same prompts, with the acceptance rate and the simple model that explains the speed-up:
//
//   tokens per step with MTP = 1 + a          (a: share of drafts accepted)
//   speed-up = (1 + a) · t1 / t2               (t1: a 1-token step, t2: a verify step = 2-token main step + MTP layer)
//
// t1 is the plain run's time per token; t2 the MTP run's decode time per verify step. The
// speed-up is then read as the ideal (1 + a) divided by what a verify step costs over a plain one.

import type { Engine, GenerationStats, OffloadStats, SpeculationStats } from '../runtime/types.ts';

export interface DecodeBenchOptions {
  /** Token-id prompts (or text, when the checkpoint has a tokenizer). */
  prompts: (string | number[])[];
  maxTokens: number;
  /** Runs per prompt and mode; the first run of each mode also warms the pipelines. */
  runs?: number;
  onProgress?: (line: string) => void;
  /** Ends the benchmark with an AbortError (the CLI's Ctrl-C / SIGTERM). */
  signal?: AbortSignal;
}

export interface DecodeModeResult {
  tokensPerS: number;
  generated: number;
  decodeSeconds: number;
  ttftMs: number;
  prefillTokensPerS: number;
  /** With experts offloaded: the cache's counters over the decode steps of the timed runs (not their prefills, not the warm-up). */
  offload?: OffloadTally;
}

/** Differences of stats().offload's counters. */
export interface OffloadTally {
  hits: number;
  misses: number;
  uploadedBytes: number;
  routeWaitMs: number;
}

export interface DecodeBenchResult {
  plain: DecodeModeResult;
  mtp?: DecodeModeResult & { drafted: number; accepted: number; acceptance: number; tokensPerStep: number };
  /**
   * The model's terms, measured: t1, t2 and their ratio; speedup = tokensPerStep / t2OverT1;
   * measuredSpeedup = MTP tok/s over plain tok/s (the two differ by the steps that end a reply).
   */
  model?: { t1Ms: number; t2Ms: number; t2OverT1: number; speedup: number; measuredSpeedup: number };
  /**
   * speculative 'auto' (the engine's default) on the same prompts: its tok/s, how many requests it
   * chose to speculate, and its tok/s over plain decoding's (the policy's promise: never below 1
   * but for measurement noise).
   */
  auto?: DecodeModeResult & { requests: number; speculated: number; overPlain: number; policy: SpeculationStats | null };
  /** Greedy outputs agree token for token between the modes. */
  identical: boolean;
}

type Mode = boolean | 'auto';
interface ModeRun {
  result: DecodeModeResult;
  drafted: number;
  accepted: number;
  speculated: number;
  outputs: number[][];
}

/**
 * The modes on the same prompts, interleaved: each prompt runs every mode in turn, the order
 * rotated from prompt to prompt, so that a drift of the adapter's speed (CPU adapters drift by
 * 10-20% over a minute) falls on every mode alike.
 */
async function runModes(engine: Engine, options: DecodeBenchOptions, modes: readonly Mode[]): Promise<ModeRun[]> {
  const runs = options.runs ?? 1;
  const acc = modes.map(() => ({ generated: 0, decodeSeconds: 0, ttft: 0, prefillRate: 0, drafted: 0, accepted: 0, samples: 0, speculated: 0, outputs: [] as number[][], offload: { hits: 0, misses: 0, uploadedBytes: 0, routeWaitMs: 0 } }));
  const offloaded = (await engine.stats()).offload != null;
  const counters = async () => (await engine.stats()).offload!;
  const label = (m: Mode) => (m === 'auto' ? 'auto ' : m ? 'mtp  ' : 'plain');
  // Warm-up: compile every pipeline each mode uses (not timed).
  for (const speculative of modes) for await (const chunk of engine.generate(options.prompts[0], { temperature: 0, maxTokens: 4, ignoreEos: true, speculative, signal: options.signal })) void chunk;
  let turn = 0;
  for (let r = 0; r < runs; r++) {
    for (const prompt of options.prompts) {
      const order = modes.map((_, i) => (i + turn) % modes.length);
      turn++;
      for (const m of order) {
        const speculative = modes[m];
        const a = acc[m];
        const ids: number[] = [];
        let stats: GenerationStats | undefined;
        // The first token's chunk comes after the prefill and before the decode clock starts
        // (generate.ts), so counters read there and at the end are the decode steps' alone.
        let decodeFrom: OffloadStats | undefined;
        for await (const chunk of engine.generate(prompt, { temperature: 0, maxTokens: options.maxTokens, ignoreEos: true, speculative, signal: options.signal })) {
          if (offloaded && !decodeFrom && chunk.ids.length > 0) decodeFrom = await counters();
          ids.push(...chunk.ids);
          if (chunk.done) stats = chunk.done.stats;
        }
        if (decodeFrom) {
          const to = await counters();
          a.offload.hits += to.expertHits - decodeFrom.expertHits;
          a.offload.misses += to.expertMisses - decodeFrom.expertMisses;
          a.offload.uploadedBytes += to.uploadedBytes - decodeFrom.uploadedBytes;
          a.offload.routeWaitMs += to.routeWaitMs - decodeFrom.routeWaitMs;
        }
        if (r === 0) a.outputs.push(ids);
        const s = stats!;
        const decoded = Math.max(0, s.generatedTokens - 1);
        a.generated += decoded;
        a.decodeSeconds += decoded > 0 ? decoded / s.decodeTokensPerS : 0;
        a.ttft += s.ttftMs;
        a.prefillRate += s.prefillTokensPerS;
        a.samples++;
        a.drafted += s.mtp?.drafted ?? 0;
        a.accepted += s.mtp?.accepted ?? 0;
        if (s.mtp) a.speculated++;
        options.onProgress?.(`${label(speculative)} run ${r + 1}: ${s.generatedTokens} tokens, ${s.decodeTokensPerS.toFixed(2)} tok/s${s.mtp ? `, ${s.mtp.accepted}/${s.mtp.drafted} drafts accepted` : ''}`);
      }
    }
  }
  return acc.map((a) => ({
    result: {
      tokensPerS: a.generated / Math.max(1e-9, a.decodeSeconds), generated: a.generated, decodeSeconds: a.decodeSeconds, ttftMs: a.ttft / a.samples, prefillTokensPerS: a.prefillRate / a.samples,
      ...(offloaded ? { offload: a.offload } : {}),
    },
    drafted: a.drafted,
    accepted: a.accepted,
    speculated: a.speculated,
    outputs: a.outputs,
  }));
}

export async function runDecodeBench(engine: Engine, options: DecodeBenchOptions): Promise<DecodeBenchResult> {
  if (!engine.info.hasMtp) {
    const [plain] = await runModes(engine, options, [false]);
    return { plain: plain.result, identical: true };
  }
  const [plain, mtp, auto] = await runModes(engine, options, [false, true, 'auto']);
  const acceptance = mtp.drafted > 0 ? mtp.accepted / mtp.drafted : 0;
  const t1 = 1000 / plain.result.tokensPerS;
  const t2 = (1000 * mtp.result.decodeSeconds) / Math.max(1, mtp.drafted);
  return {
    plain: plain.result,
    mtp: { ...mtp.result, drafted: mtp.drafted, accepted: mtp.accepted, acceptance, tokensPerStep: 1 + acceptance },
    model: { t1Ms: t1, t2Ms: t2, t2OverT1: t2 / t1, speedup: (1 + acceptance) / (t2 / t1), measuredSpeedup: mtp.result.tokensPerS / plain.result.tokensPerS },
    auto: {
      ...auto.result, requests: options.prompts.length * (options.runs ?? 1), speculated: auto.speculated, overPlain: auto.result.tokensPerS / plain.result.tokensPerS,
      policy: (await engine.stats()).speculation ?? null,
    },
    identical: plain.outputs.every((ids, i) => ids.join() === mtp.outputs[i].join() && ids.join() === auto.outputs[i].join()),
  };
}

/** Temperatures of the acceptance figures (issue 17 item 4): greedy, the demo's default, and 1. */
export const ACCEPTANCE_TEMPERATURES = [0, 0.7, 1] as const;

export interface AcceptanceAtTemperature {
  temperature: number;
  /** How the MTP module drafted: its argmax, or a sample of its q (speculative sampling). */
  drafts: 'greedy' | 'sampled';
  drafted: number;
  accepted: number;
  acceptance: number;
  /** MTP tok/s of these runs (speculative: true; interleaved with nothing, so read it as a rough figure). */
  tokensPerS: number;
}

/**
 * The share of drafts accepted by temperature, with greedy and with sampled drafts, on the same
 * prompts and seeds (speculative: true; top_p the engine's default 0.95). At temperature 0 both
 * draft the argmax: one row. Each (temperature, drafts) runs every prompt with `seeds` seeds.
 */
export async function acceptanceByTemperature(
  engine: Engine,
  options: Pick<DecodeBenchOptions, 'prompts' | 'maxTokens' | 'signal' | 'onProgress'> & { temperatures?: readonly number[]; seeds?: number },
): Promise<AcceptanceAtTemperature[]> {
  const rows: AcceptanceAtTemperature[] = [];
  const seeds = options.seeds ?? 2;
  for (const temperature of options.temperatures ?? ACCEPTANCE_TEMPERATURES) {
    for (const drafts of temperature > 0 ? (['greedy', 'sampled'] as const) : (['greedy'] as const)) {
      let drafted = 0;
      let accepted = 0;
      let decoded = 0;
      let seconds = 0;
      for (const [i, prompt] of options.prompts.entries()) {
        for (let s = 0; s < (temperature > 0 ? seeds : 1); s++) {
          let stats: GenerationStats | undefined;
          const run = { temperature, seed: 1000 * s + i, maxTokens: options.maxTokens, ignoreEos: true, speculative: true, drafts, signal: options.signal };
          for await (const chunk of engine.generate(prompt, run)) if (chunk.done) stats = chunk.done.stats;
          drafted += stats!.mtp?.drafted ?? 0;
          accepted += stats!.mtp?.accepted ?? 0;
          const n = Math.max(0, stats!.generatedTokens - 1);
          decoded += n;
          seconds += n > 0 ? n / stats!.decodeTokensPerS : 0;
        }
      }
      const row = { temperature, drafts, drafted, accepted, acceptance: drafted > 0 ? accepted / drafted : 0, tokensPerS: decoded / Math.max(1e-9, seconds) };
      options.onProgress?.(`acceptance at temperature ${temperature}, ${drafts} drafts: ${accepted}/${drafted} (${(100 * row.acceptance).toFixed(1)}%)`);
      rows.push(row);
    }
  }
  return rows;
}
