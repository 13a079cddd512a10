// The decode benchmark: tokens per second of greedy generation with and without MTP speculative
// decoding, in the same run on the same prompts, with the acceptance rate and the simple model
// that explains the speed-up:
//
//   tokens per step with MTP = 1 + a          (a: share of drafts accepted)
//   speed-up = (1 + a) · t1 / t2               (t1: a 1-token step, t2: a verify step = 2-token main step + MTP layer)
//
// t1 is the plain run's time per token; t2 the MTP run's decode time per verify step. The
// speed-up is then read as the ideal (1 + a) divided by what a verify step costs over a plain one.

import type { Engine, GenerationStats } from '../runtime/types.ts';

export interface DecodeBenchOptions {
  /** Token-id prompts (or text, when the checkpoint has a tokenizer). */
  prompts: (string | number[])[];
  maxTokens: number;
  /** Runs per prompt and mode; the first run of each mode also warms the pipelines. */
  runs?: number;
  onProgress?: (line: string) => void;
}

export interface DecodeModeResult {
  tokensPerS: number;
  generated: number;
  decodeSeconds: number;
  ttftMs: number;
  prefillTokensPerS: number;
}

export interface DecodeBenchResult {
  plain: DecodeModeResult;
  mtp?: DecodeModeResult & { drafted: number; accepted: number; acceptance: number; tokensPerStep: number };
  /**
   * The model's terms, measured: t1, t2 and their ratio; speedup = tokensPerStep / t2OverT1;
   * measuredSpeedup = MTP tok/s over plain tok/s (the two differ by the steps that end a reply).
   */
  model?: { t1Ms: number; t2Ms: number; t2OverT1: number; speedup: number; measuredSpeedup: number };
  /** Greedy outputs agree token for token between the two modes. */
  identical: boolean;
}

async function runMode(engine: Engine, options: DecodeBenchOptions, speculative: boolean): Promise<{ result: DecodeModeResult; drafted: number; accepted: number; outputs: number[][] }> {
  const runs = options.runs ?? 1;
  let generated = 0;
  let decodeSeconds = 0;
  let ttft = 0;
  let prefillRate = 0;
  let drafted = 0;
  let accepted = 0;
  let samples = 0;
  const outputs: number[][] = [];
  // Warm-up: compile every pipeline the mode uses (not timed).
  for await (const chunk of engine.generate(options.prompts[0], { temperature: 0, maxTokens: 4, ignoreEos: true, speculative })) void chunk;
  for (let r = 0; r < runs; r++) {
    for (const prompt of options.prompts) {
      const ids: number[] = [];
      let stats: GenerationStats | undefined;
      for await (const chunk of engine.generate(prompt, { temperature: 0, maxTokens: options.maxTokens, ignoreEos: true, speculative })) {
        ids.push(...chunk.ids);
        if (chunk.done) stats = chunk.done.stats;
      }
      if (r === 0) outputs.push(ids);
      const s = stats!;
      const decoded = Math.max(0, s.generatedTokens - 1);
      generated += decoded;
      decodeSeconds += decoded > 0 ? decoded / s.decodeTokensPerS : 0;
      ttft += s.ttftMs;
      prefillRate += s.prefillTokensPerS;
      samples++;
      drafted += s.mtp?.drafted ?? 0;
      accepted += s.mtp?.accepted ?? 0;
      options.onProgress?.(`${speculative ? 'mtp  ' : 'plain'} run ${r + 1}: ${s.generatedTokens} tokens, ${s.decodeTokensPerS.toFixed(2)} tok/s${s.mtp ? `, ${s.mtp.accepted}/${s.mtp.drafted} drafts accepted` : ''}`);
    }
  }
  return {
    result: { tokensPerS: generated / Math.max(1e-9, decodeSeconds), generated, decodeSeconds, ttftMs: ttft / samples, prefillTokensPerS: prefillRate / samples },
    drafted,
    accepted,
    outputs,
  };
}

export async function runDecodeBench(engine: Engine, options: DecodeBenchOptions): Promise<DecodeBenchResult> {
  const plain = await runMode(engine, options, false);
  if (!engine.info.hasMtp) return { plain: plain.result, identical: true };
  const mtp = await runMode(engine, options, true);
  const acceptance = mtp.drafted > 0 ? mtp.accepted / mtp.drafted : 0;
  const t1 = 1000 / plain.result.tokensPerS;
  const t2 = (1000 * mtp.result.decodeSeconds) / Math.max(1, mtp.drafted);
  return {
    plain: plain.result,
    mtp: { ...mtp.result, drafted: mtp.drafted, accepted: mtp.accepted, acceptance, tokensPerStep: 1 + acceptance },
    model: { t1Ms: t1, t2Ms: t2, t2OverT1: t2 / t1, speedup: (1 + acceptance) / (t2 / t1), measuredSpeedup: mtp.result.tokensPerS / plain.result.tokensPerS },
    identical: plain.outputs.every((ids, i) => ids.join() === mtp.outputs[i].join()),
  };
}
