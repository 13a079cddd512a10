// The CPU reference forward against DeepSeek's official code (dsv3-tiny-official, mode f32_dequant):
// prefill logits, router choices, residual stream, greedy decoding through the latent cache, MTP
// drafts; and its own consistency (absorbed vs naive attention, incremental vs one-shot, layouts).

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig, type DeepseekV3Config } from '../../config.ts';
import { ArgumentError } from '../../errors.ts';
import { openCheckpoint } from '../../io/checkpoint_files.ts';
import { nodeDir } from '../../io/node_source.ts';
import { officialFixture, officialReference } from '../../testing/fixtures.ts';
import { referenceForward, referenceGreedy } from './forward.ts';
import { ReferenceLatentCache } from './mla.ts';
import { referenceMtp } from './mtp.ts';
import { loadReferenceWeights, type ReferenceWeights } from './tensors.ts';

interface OfficialPrompt {
  prompt: number[];
  prefill_logits: number[][];
  greedy: { tokens: number[]; step_logits: number[][]; tokens_naive: number[] };
  router: Record<string, { indices: number[][]; weights: number[][] }>;
  mtp: { logits: number[][]; argmax: number[] };
  intermediates?: { embed: number[][]; after_block: number[][][]; final_norm: number[][] };
}

const official = officialReference<{ modes: { f32_dequant: { prompts: OfficialPrompt[] } } }>();
const prompts = official.modes.f32_dequant.prompts;

let config: DeepseekV3Config;
let weights: ReferenceWeights;
beforeAll(async () => {
  const checkpoint = await openCheckpoint(nodeDir(officialFixture()));
  config = parseConfig(checkpoint.configText);
  weights = await loadReferenceWeights(checkpoint, config);
});

// Largest error seen per comparison, printed at the end (the figures the tolerances are set from).
const observed = new Map<string, number>();
afterAll(() => {
  console.log([...observed].map(([name, err]) => `${name}: ${err.toExponential(2)}`).join('\n'));
});

/** Max |a - b| over rows; fails with the first offending values side by side. */
function expectClose(name: string, actual: ArrayLike<number>[], expected: ArrayLike<number>[], tol: number): void {
  expect(actual.length, `${name}: rows`).toBe(expected.length);
  let worst = 0;
  let where = '';
  actual.forEach((row, r) => {
    expect(row.length, `${name}: row ${r} length`).toBe(expected[r].length);
    for (let j = 0; j < row.length; j++) {
      const err = Math.abs(row[j] - expected[r][j]);
      if (!(err <= worst)) {
        worst = err;
        where = `row ${r} col ${j}: got ${row[j]}, expected ${expected[r][j]}`;
      }
    }
  });
  observed.set(name, Math.max(observed.get(name) ?? 0, worst));
  expect(worst, `${name}: max abs error ${worst} at ${where}`).toBeLessThan(tol);
}

/** Bit-identical f32 arrays (vitest's deep equality is slow on large typed arrays). */
function sameBits(a: Float32Array, b: Float32Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

describe.each(prompts.map((p, i) => [i, p.prompt.length, p] as const))('prompt %i (%i tokens)', (i, _length, official) => {
  it('prefill: logits, router choices and (prompt 0) the residual stream match the official code', () => {
    const out = referenceForward(weights, config, official.prompt, { intermediates: true });
    expectClose('prefill_logits', out.logits, official.prefill_logits, 1e-4);

    for (const [layer, choices] of Object.entries(official.router)) {
      const ours = out.router.get(Number(layer))!;
      expect(ours, `router of layer ${layer}`).toHaveLength(official.prompt.length);
      choices.indices.forEach((ids, t) => {
        const mine = ours[t];
        expect([...mine.ids].sort((a, b) => a - b), `layer ${layer} token ${t} experts`).toEqual([...ids].sort((a, b) => a - b));
        const byId = new Map(mine.ids.map((e, k) => [e, mine.weights[k]]));
        expectClose('router_weights', [ids.map((e) => byId.get(e)!)], [choices.weights[t]], 1e-5);
      });
    }
    expect([...out.router.keys()]).toEqual(Object.keys(official.router).map(Number));

    if (official.intermediates) {
      const inter = official.intermediates;
      expectClose('embed', out.intermediates.get('embed')!, inter.embed, 1e-6);
      inter.after_block.forEach((rows, L) => expectClose('after_block', out.intermediates.get(`after_block.${L}`)!, rows, 2e-5));
      expectClose('final_norm', out.intermediates.get('final_norm')!, inter.final_norm, 2e-5);
      expectClose('hidden_is_final_norm', out.hidden, inter.final_norm, 2e-5);
    }
  });

  it('greedy decoding through the latent cache gives the official tokens and step logits', () => {
    const greedy = referenceGreedy(weights, config, official.prompt, official.greedy.tokens.length);
    expect(greedy.tokens).toEqual(official.greedy.tokens);
    expectClose('step_logits', greedy.stepLogits, official.greedy.step_logits, 1e-4);
    expect(greedy.cache.length).toBe(official.prompt.length + official.greedy.tokens.length - 1);

    // One prefill over prompt + continuation gives the same logits at the same positions.
    const seq = [...official.prompt, ...official.greedy.tokens];
    const full = referenceForward(weights, config, seq);
    const T = official.prompt.length;
    expectClose('decode_vs_prefill', greedy.stepLogits, full.logits.slice(T - 1, T - 1 + greedy.stepLogits.length), 1e-5);

    // MTP over the whole sequence, fed the main model's post-norm hidden states.
    const mtp = referenceMtp(weights, config, seq.slice(1), full.hidden.slice(0, -1));
    expectClose('mtp_logits', mtp.logits, official.mtp.logits, 1e-4);
    expect(mtp.argmax).toEqual(official.mtp.argmax);
  });

  it('naive attention equals absorbed attention', () => {
    const absorbed = referenceForward(weights, config, official.prompt);
    const naive = referenceForward(weights, config, official.prompt, { attention: 'naive' });
    expectClose('naive_vs_absorbed', naive.logits, absorbed.logits, 1e-5);
    expectClose('naive_vs_official', naive.logits, official.prefill_logits, 1e-4);
  });
});

describe('consistency', () => {
  it('naive-attention greedy decoding gives the official tokens_naive', () => {
    const official = prompts[1];
    const naive = referenceGreedy(weights, config, official.prompt, official.greedy.tokens.length, { attention: 'naive' });
    expect(naive.tokens).toEqual(official.greedy.tokens_naive);
    expectClose('naive_step_logits', naive.stepLogits, official.greedy.step_logits, 1e-4);
  });

  it('the MTP module continued through its cache equals one shot', () => {
    const official = prompts[1];
    const seq = [...official.prompt, ...official.greedy.tokens];
    const { hidden } = referenceForward(weights, config, seq);
    const oneShot = referenceMtp(weights, config, seq.slice(1), hidden.slice(0, -1));
    // the prompt's rows at once, then one row per step, as speculative decoding feeds it
    const cache = new ReferenceLatentCache();
    const T = official.prompt.length;
    const rows = referenceMtp(weights, config, seq.slice(1, T), hidden.slice(0, T - 1), { cache }).logits;
    for (let i = T - 1; i < seq.length - 1; i++) rows.push(...referenceMtp(weights, config, [seq[i + 1]], [hidden[i]], { cache }).logits);
    expectClose('mtp_incremental_vs_oneshot', rows, oneShot.logits, 1e-5);
  });

  it('a multi-token call after a prefill equals one prefill', () => {
    const seq = prompts[2].prompt;
    const cache = new ReferenceLatentCache();
    const first = referenceForward(weights, config, seq.slice(0, 13), { cache }).logits;
    const rest = referenceForward(weights, config, seq.slice(13), { cache }).logits;
    expectClose('chunked_vs_prefill', [...first, ...rest], referenceForward(weights, config, seq).logits, 1e-5);
  });

  it('the single-file and sharded layouts give identical outputs', async () => {
    const sharded = await openCheckpoint(nodeDir(officialFixture('sharded')));
    expect(sharded.layout).toBe('sharded');
    const shardedWeights = await loadReferenceWeights(sharded, parseConfig(sharded.configText));
    expect([...shardedWeights.names].sort()).toEqual([...weights.names].sort());
    for (const name of weights.names) expect(sameBits(shardedWeights.get(name), weights.get(name)), name).toBe(true);
    const tokens = prompts[0].prompt;
    const a = referenceForward(shardedWeights, config, tokens).logits;
    const b = referenceForward(weights, config, tokens).logits;
    expect(a.every((row, t) => sameBits(row, b[t]))).toBe(true);
  });

  it('refuses token ids outside the vocabulary, naming the position', () => {
    expect(() => referenceForward(weights, config, [0, config.vocab_size])).toThrow(ArgumentError);
    expect(() => referenceForward(weights, config, [0, config.vocab_size])).toThrow(/token 1 is 320/);
  });
});
