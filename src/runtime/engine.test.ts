// The engine in this thread on the official fixture (token ids; it has no tokenizer): generation
// through sessions, limits checked before any GPU work, abort, stop ids, logits, stats, unload.

import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { AbortError, ArgumentError, DeviceLostError, GpuOutOfMemoryError, PromptTooLongError, TokenizerError, WebmoeError } from '../errors.ts';
import { openNodeGpu } from '../gpu/node.ts';
import { testGpu } from '../gpu/testing.ts';
import { nodeDir } from '../io/node_source.ts';
import { officialFixture, officialReference } from '../testing/fixtures.ts';
import { repetitionPenaltyRef } from '../kernels/repetition_penalty.ref.ts';
import { argmaxRef } from '../kernels/sample.ref.ts';
import { memoryDir } from '../io/sources.ts';
import { generateCheckpoint } from '../../tools/checkpoint/generate.ts';
import { ODD } from '../../tools/checkpoint/presets.ts';
import { createLocalEngine } from './engine.ts';
import { trackingDevice } from '../testing/tracking_device.ts';
import type { Engine, GenerateChunk, GenerateOptions } from './types.ts';

interface OfficialPrompt {
  prompt: number[];
  prefill_logits: number[][];
  greedy: { tokens: number[] };
}
const prompts = officialReference<{ modes: { f32_dequant: { prompts: OfficialPrompt[] } } }>().modes.f32_dequant.prompts;

let engine: Engine;
beforeAll(async () => {
  const gpu = await testGpu();
  engine = await createLocalEngine({ gpu, dir: nodeDir(officialFixture()), maxContext: 300, prefillChunk: 16 });
});
afterAll(() => engine?.unload());

async function collect(chunks: AsyncIterable<GenerateChunk>): Promise<{ ids: number[]; last: GenerateChunk }> {
  const ids: number[] = [];
  let last!: GenerateChunk;
  for await (const chunk of chunks) {
    ids.push(...chunk.ids);
    last = chunk;
  }
  return { ids, last };
}

describe('local engine (official fixture, ids)', () => {
  it('greedy generation gives the official continuation, with stats', async () => {
    const p = prompts[0];
    const { ids, last } = await collect(engine.generate(p.prompt, { temperature: 0, maxTokens: 8, ignoreEos: true }));
    expect(ids).toEqual(p.greedy.tokens.slice(0, 8));
    expect(last.done?.finishReason).toBe('length');
    expect(last.done?.stats).toMatchObject({ promptTokens: p.prompt.length, prefilledTokens: p.prompt.length, generatedTokens: 8 });
    expect(last.done!.stats.decodeTokensPerS).toBeGreaterThan(0);
  });

  it.each([
    [0, 16],
    [1, 7],
    [2, 5],
  ])('speculative decoding with the MTP module (prompt %i, %i tokens) gives exactly the plain greedy tokens', async (i, n) => {
    const p = prompts[i];
    const spec = await collect(engine.generate(p.prompt, { temperature: 0, maxTokens: n, ignoreEos: true, speculative: true }));
    expect(spec.ids).toEqual(p.greedy.tokens.slice(0, n));
    const { drafted, accepted } = spec.last.done!.stats.mtp!;
    expect(drafted).toBeGreaterThan(0);
    expect(accepted).toBeGreaterThan(0);
    expect(accepted).toBeLessThanOrEqual(drafted);
    // Every step emits 1 + (accepted) tokens: generated = 1 (prefill) + drafted + accepted, up to the last step's spill.
    expect(1 + drafted + accepted).toBeGreaterThanOrEqual(n);
    const plain = await collect(engine.generate(p.prompt, { temperature: 0, maxTokens: n, ignoreEos: true, speculative: false }));
    expect(plain.ids).toEqual(spec.ids);
    expect(plain.last.done!.stats.mtp).toBeUndefined();
  });

  it('a session keeps its cache: the next turn prefills only its new tokens and continues exactly', async () => {
    const p = prompts[1];
    const session = await engine.createSession();
    onTestFinished(() => engine.closeSession(session));
    const first = await collect(engine.generate(p.prompt, { temperature: 0, maxTokens: 4, ignoreEos: true, session }));
    expect(first.ids).toEqual(p.greedy.tokens.slice(0, 4));
    // Feeding the next greedy tokens as a new "prompt" continues the same sequence.
    const more = p.greedy.tokens.slice(4, 6);
    const second = await collect(engine.generate(more, { temperature: 0, maxTokens: 3, ignoreEos: true, session }));
    // Only the new ids run (and the last generated id, unless an accepted MTP draft already put it in the cache).
    expect(second.last.done?.stats.prefilledTokens).toBeLessThanOrEqual(1 + more.length);
    expect(second.ids).toEqual(p.greedy.tokens.slice(6, 9));
    expect((await engine.stats()).sessions).toBe(1);
    await engine.closeSession(session);
    expect((await engine.stats()).sessions).toBe(0);
  });

  it('stops on a stop id, and checks arguments and limits before any work', async () => {
    const p = prompts[0];
    const stopAt = p.greedy.tokens[2];
    const { ids, last } = await collect(engine.generate(p.prompt, { temperature: 0, maxTokens: 10, stopTokenIds: [stopAt], ignoreEos: true }));
    expect(ids).toEqual(p.greedy.tokens.slice(0, 2));
    expect(last.done?.finishReason).toBe('stop');
    await expect(collect(engine.generate(new Array(300).fill(5)))).rejects.toBeInstanceOf(PromptTooLongError);
    await expect(collect(engine.generate([999]))).rejects.toBeInstanceOf(ArgumentError);
    await expect(collect(engine.generate([5], { temperature: -1 }))).rejects.toBeInstanceOf(ArgumentError);
    await expect(collect(engine.generate('text needs a tokenizer'))).rejects.toBeInstanceOf(TokenizerError);
    // Options of the wrong type (plain JS, or over the Worker) are ArgumentErrors, not TypeErrors.
    for (const bad of [{ stop: 5 }, { stop: [null] }, { stopTokenIds: 5 }, { stopTokenIds: [1.5] }, { ignoreEos: 'yes' }] as unknown as GenerateOptions[]) {
      await expect(collect(engine.generate([5], bad)), JSON.stringify(bad)).rejects.toBeInstanceOf(ArgumentError);
    }
    expect((await engine.stats()).sessions).toBe(0);
  });

  it('an abort stops the request within a step and releases its session', async () => {
    const controller = new AbortController();
    const seen: number[] = [];
    const run = async () => {
      for await (const chunk of engine.generate(prompts[0].prompt, { temperature: 0, maxTokens: 50, ignoreEos: true, signal: controller.signal })) {
        seen.push(...chunk.ids);
        if (seen.length === 3) controller.abort();
      }
    };
    await expect(run()).rejects.toBeInstanceOf(AbortError);
    expect(seen).toHaveLength(3);
    expect((await engine.stats()).sessions).toBe(0);
  });

  it('repetition penalty: the first token is the argmax of the penalised logits; a huge penalty never repeats', async () => {
    const p = prompts[2];
    const last = Float32Array.from(p.prefill_logits[p.prompt.length - 1]);
    const penalised = repetitionPenaltyRef(last, 1, last.length, p.prompt, 1.5);
    const first = await collect(engine.generate(p.prompt, { temperature: 0, maxTokens: 1, ignoreEos: true, repetitionPenalty: 1.5 }));
    expect(first.ids).toEqual([argmaxRef(penalised)]);
    const { ids } = await collect(engine.generate(p.prompt, { temperature: 0, maxTokens: 6, ignoreEos: true, repetitionPenalty: 1e6 }));
    expect(new Set([...p.prompt, ...ids]).size).toBe(new Set(p.prompt).size + ids.length);
    await expect(collect(engine.generate(p.prompt, { repetitionPenalty: 0 }))).rejects.toBeInstanceOf(ArgumentError);
  });

  it('samples with speculative decoding too (seeded: the same seed gives the same tokens)', async () => {
    const p = prompts[0];
    const run = () => collect(engine.generate(p.prompt, { temperature: 0.8, topP: 0.9, seed: 1234, maxTokens: 6, ignoreEos: true, speculative: true }));
    const a = await run();
    const b = await run();
    expect(a.ids).toEqual(b.ids);
    expect(a.ids).toHaveLength(6);
    expect(a.last.done!.stats.mtp!.drafted).toBeGreaterThan(0);
    await expect(collect(engine.generate(p.prompt, { drafts: 'best' as unknown as 'greedy' }))).rejects.toThrow(/drafts must be "sampled" or "greedy", got "best"/);
  });

  it("speculative 'auto' (the default) goes by the step costs measured at load, and decodes the same tokens", async () => {
    const before = (await engine.stats()).speculation!;
    expect(before.plainStepMs).toBeGreaterThan(0);
    expect(before.verifyStepMs).toBeGreaterThan(0);
    expect(['at load', 'remembered']).toContain(before.measured);
    const p = prompts[0];
    const auto = await collect(engine.generate(p.prompt, { temperature: 0, maxTokens: 6, ignoreEos: true }));
    expect(auto.ids).toEqual(p.greedy.tokens.slice(0, 6));
    const after = (await engine.stats()).speculation!;
    // The request's steps refreshed the costs of the kind it ran.
    if (auto.last.done!.stats.mtp) expect(after.verifySteps).toBeGreaterThan(before.verifySteps);
    else expect(after.plainStepMs).not.toBe(before.plainStepMs);
    await expect(collect(engine.generate(p.prompt, { speculative: 'yes' as unknown as boolean }))).rejects.toThrow(/speculative must be true, false or "auto", got "yes"/);
  });

  it('with greedy drafts, samples the same tokens for a seed with speculative decoding as without (row r of a verify draws token step + r\'s uniform)', async () => {
    // Sampled drafts (the default) keep the distribution, not the tokens of a seed: speculative.test.ts, mtp.test.ts.
    for (const [i, seed, temperature] of [[0, 7, 0.8], [2, 4242, 0.6]] as const) {
      const options = { temperature, topP: 0.95, seed, maxTokens: 10, ignoreEos: true };
      const plain = await collect(engine.generate(prompts[i].prompt, { ...options, speculative: false }));
      const speculated = await collect(engine.generate(prompts[i].prompt, { ...options, speculative: true, drafts: 'greedy' }));
      expect(speculated.last.done!.stats.mtp!.accepted, 'some drafts accepted').toBeGreaterThan(0);
      expect(speculated.ids, `prompt ${i}, seed ${seed}`).toEqual(plain.ids);
    }
  });

  it('reports the experts that processed each generated token, with and without speculative decoding', async () => {
    const p = prompts[0];
    for (const speculative of [false, true]) {
      const tokens: number[] = [];
      const experts: number[][][] = [];
      for await (const chunk of engine.generate(p.prompt, { temperature: 0, maxTokens: 6, ignoreEos: true, experts: true, speculative })) {
        for (const e of chunk.experts ?? []) {
          tokens.push(e.token);
          experts.push(e.experts);
        }
      }
      // Every generated token but the last is run through the model, in order (an accepted draft may be the last).
      expect(tokens.length).toBeGreaterThanOrEqual(5);
      expect(tokens).toEqual(p.greedy.tokens.slice(0, tokens.length));
      for (const perLayer of experts) {
        expect(perLayer).toHaveLength(engine.info.moeLayers.length);
        for (const ids of perLayer) {
          expect(new Set(ids).size).toBe(engine.info.config.num_experts_per_tok);
          expect(ids.every((e) => e >= 0 && e < engine.info.config.n_routed_experts)).toBe(true);
        }
      }
    }
  });

  it('closing a session during its request stops it with AbortError and frees it; a break keeps the seen token', async () => {
    const p = prompts[0];
    const session = await engine.createSession();
    const seen: number[] = [];
    const run = async () => {
      for await (const chunk of engine.generate(p.prompt, { temperature: 0, maxTokens: 30, ignoreEos: true, session, speculative: false })) {
        seen.push(...chunk.ids);
        if (seen.length === 2) await engine.closeSession(session);
      }
    };
    await expect(run()).rejects.toBeInstanceOf(AbortError);
    expect((await engine.stats()).sessions).toBe(0);

    // Breaking out of the loop: the last id seen stays in the session, so a continuation follows it.
    const kept = await engine.createSession();
    onTestFinished(() => engine.closeSession(kept));
    for await (const chunk of engine.generate(p.prompt, { temperature: 0, maxTokens: 30, ignoreEos: true, session: kept, speculative: false })) {
      if (chunk.ids.length > 0) break;
    }
    const next = await collect(engine.generate(p.greedy.tokens.slice(1, 2), { temperature: 0, maxTokens: 2, ignoreEos: true, session: kept }));
    expect(next.ids).toEqual(p.greedy.tokens.slice(2, 4));
  });

  it('logits of every position match the official prefill logits', async () => {
    const p = prompts[1];
    const rows = await engine.logits(p.prompt, { positions: 'all' });
    expect(rows).toHaveLength(p.prompt.length);
    let worst = 0;
    rows.forEach((row, r) => row.forEach((v, j) => (worst = Math.max(worst, Math.abs(v - p.prefill_logits[r][j])))));
    expect(worst).toBeLessThan(1e-4);
    const last = await engine.logits(p.prompt);
    expect(last).toHaveLength(1);
  });

  it('two requests at once both finish with their own tokens (the scheduler interleaves them)', async () => {
    const [a, b] = await Promise.all([
      collect(engine.generate(prompts[0].prompt, { temperature: 0, maxTokens: 5, ignoreEos: true })),
      collect(engine.generate(prompts[2].prompt, { temperature: 0, maxTokens: 5, ignoreEos: true })),
    ]);
    expect(a.ids).toEqual(prompts[0].greedy.tokens.slice(0, 5));
    expect(b.ids).toEqual(prompts[2].greedy.tokens.slice(0, 5));
  });
});

describe('local engine admission', () => {
  it('queues a burst over the cache budget until requests in flight free their caches; refuses at once when nothing will', async () => {
    const gpu = await testGpu();
    // One session's first page (256 positions x 5 layers x 288 f32) is ~1.4 MiB: two fit in 3 MiB.
    const local = await createLocalEngine({ gpu, dir: nodeDir(officialFixture()), maxContext: 256, cacheBudgetBytes: 3 * 2 ** 20 });
    try {
      const burst = await Promise.all(Array.from({ length: 8 }, (_, i) => collect(local.generate([1 + i, 2, 3], { temperature: 0, maxTokens: 2, ignoreEos: true, speculative: false }))));
      for (const r of burst) expect(r.ids).toHaveLength(2);
      expect((await local.stats()).sessions).toBe(0);
      // Two kept sessions hold the budget and are idle: nothing will free it, so no wait.
      const kept = [await local.createSession(), await local.createSession()];
      for (const session of kept) await collect(local.generate([1, 2], { session, temperature: 0, maxTokens: 1 }));
      await expect(collect(local.generate([4, 5], { temperature: 0, maxTokens: 1 }))).rejects.toBeInstanceOf(PromptTooLongError);
    } finally {
      await local.unload();
    }
  });

  it('a request waiting for cache memory ends at its abort, while the requests it waits for go on', async () => {
    const gpu = await testGpu();
    const local = await createLocalEngine({ gpu, dir: nodeDir(officialFixture()), maxContext: 256, cacheBudgetBytes: 3 * 2 ** 20 });
    try {
      const long = [1, 2].map((i) => collect(local.generate([i, 2, 3], { temperature: 0, maxTokens: 30, ignoreEos: true, speculative: false })));
      await new Promise((r) => setTimeout(r, 50));
      const controller = new AbortController();
      const waiting = collect(local.generate([3, 2, 3], { temperature: 0, maxTokens: 2, signal: controller.signal }));
      await new Promise((r) => setTimeout(r, 50));
      controller.abort();
      await expect(waiting).rejects.toBeInstanceOf(AbortError);
      let finished = 0;
      for (const p of long) void p.then(() => finished++);
      await new Promise((r) => setTimeout(r, 0));
      expect(finished).toBe(0); // the abort did not wait for them
      for (const r of await Promise.all(long)) expect(r.ids).toHaveLength(30);
    } finally {
      await local.unload();
    }
  });
});

describe('local engine and dropped iterators', () => {
  it('closes the session of an iterator dropped without return() once it is garbage-collected', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const gpu = await testGpu();
    const local = await createLocalEngine({ gpu, dir: nodeDir(officialFixture()), maxContext: 256 });
    try {
      // Made in a function of their own, so that no variable of this one keeps the last alive.
      const start = async (into: unknown[]) => {
        const it = local.generate([1, 2, 3], { temperature: 0, maxTokens: 50, ignoreEos: true })[Symbol.asyncIterator]();
        await it.next(); // one chunk, then (below) the caller forgets the iterator
        into.push(it);
      };
      const held: unknown[] = [];
      for (let i = 0; i < 3; i++) await start(held);
      expect((await local.stats()).sessions).toBe(3);
      held.length = 0;
      for (let round = 0; round < 40 && (await local.stats()).sessions > 0; round++) {
        gc();
        await new Promise((r) => setTimeout(r, 20)); // finalisers run after a turn of the event loop
      }
      expect((await local.stats()).sessions).toBe(0);
      expect((await local.stats()).cacheBytes).toBe(0);
      // On a kept session: the session stays, free for its next request.
      const session = await local.createSession();
      await (async () => {
        const it = local.generate([1, 2, 3], { session, temperature: 0, maxTokens: 50, ignoreEos: true })[Symbol.asyncIterator]();
        await it.next();
      })();
      let freed = false;
      for (let round = 0; round < 20 && !freed; round++) {
        gc();
        await new Promise((r) => setTimeout(r, 20));
        freed = await collect(local.generate([4], { session, temperature: 0, maxTokens: 1 })).then(() => true, (e: Error) => (/already generating/.test(e.message) ? false : Promise.reject(e)));
      }
      expect(freed).toBe(true);
    } finally {
      await local.unload();
    }
  });
});

describe('local engine on a device that is lost', () => {
  it('a request in flight and the next ones end in DeviceLostError', async () => {
    const gpu = await openNodeGpu();
    const lostEngine = await createLocalEngine({ gpu, dir: nodeDir(officialFixture()), maxContext: 64, ownsGpu: true });
    try {
      const seen: number[] = [];
      const run = async () => {
        for await (const chunk of lostEngine.generate(prompts[0].prompt, { temperature: 0, maxTokens: 40, ignoreEos: true })) {
          seen.push(...chunk.ids);
          if (seen.length === 2) gpu.device.destroy();
        }
      };
      await expect(run()).rejects.toBeInstanceOf(DeviceLostError);
      await expect(collect(lostEngine.generate([5, 6]))).rejects.toBeInstanceOf(DeviceLostError);
    } finally {
      await lostEngine.unload();
    }
  });
});

describe('local engine unloaded during a request', () => {
  it('the request stops with AbortError at its next step, and unload frees everything', async () => {
    const gpu = await openNodeGpu();
    const local = await createLocalEngine({ gpu, dir: nodeDir(officialFixture()), maxContext: 64, ownsGpu: true });
    const seen: number[] = [];
    let unloading: Promise<void> | undefined;
    const run = async () => {
      for await (const chunk of local.generate(prompts[0].prompt, { temperature: 0, maxTokens: 40, ignoreEos: true })) {
        seen.push(...chunk.ids);
        if (seen.length === 2) unloading = local.unload();
      }
    };
    await expect(run()).rejects.toBeInstanceOf(AbortError);
    await unloading;
    expect(seen.length).toBeLessThanOrEqual(4);
    await expect(collect(local.generate([5]))).rejects.toThrow(/unloaded/);
  });

  it('logits during unload end in a typed error', async () => {
    const gpu = await openNodeGpu();
    const local = await createLocalEngine({ gpu, dir: nodeDir(officialFixture()), maxContext: 300, ownsGpu: true });
    // 256 ids: several prefill chunks, so the unload lands between two of them.
    const pending = local.logits(Array.from({ length: 256 }, (_, i) => (i * 7) % 320), { positions: 'all' });
    const unloading = local.unload();
    const error = await pending.then(() => undefined, (e: unknown) => e);
    await unloading;
    expect(error).toBeInstanceOf(AbortError);
    await expect(local.logits([1, 2])).rejects.toThrow(/unloaded/);
  });
});

describe('local engine options', () => {
  it('refuses a bad maxContext or cache budget before reading the weights', async () => {
    const gpu = await testGpu();
    await expect(createLocalEngine({ gpu, dir: nodeDir(officialFixture()), maxContext: 100000 })).rejects.toThrow(/maxContext must be an integer in \[2, 512\]/);
    await expect(createLocalEngine({ gpu, dir: nodeDir(officialFixture()), cacheBudgetBytes: Number.NaN })).rejects.toThrow(/cacheBudgetBytes/);
    await expect(createLocalEngine({ gpu, dir: nodeDir(officialFixture()), maxBindingMib: -1 })).rejects.toThrow(/maxBindingMib must be a positive number of MiB, got -1/);
    await expect(createLocalEngine({ gpu, dir: nodeDir(officialFixture()), draftVocab: 321 })).rejects.toThrow(/draftVocab must be an integer in \[1, 320\]/);
    await expect(createLocalEngine({ gpu, dir: nodeDir(officialFixture()), expertSlots: 13 })).rejects.toThrow(/expertSlots must be an integer in \[1, 12\]/);
  });

  it('refuses a model over gpuBudgetMib before it allocates or downloads anything, saying what would fit', async () => {
    const gpu = await testGpu();
    const { device, made } = trackingDevice(gpu.device);
    const phases: string[] = [];
    // The fixture: weights 4.2 MiB, plans 4.4 MiB, and 5 layers x 288 f32 of latent cache per
    // position; with one routed expert per layer on the GPU (the rest in CPU memory) 9.9 MiB at 512.
    const error = await createLocalEngine({ gpu: { ...gpu, device }, dir: nodeDir(officialFixture()), maxContext: 512, gpuBudgetMib: 9, onProgress: (p) => phases.push(p.phase) }).catch((e) => e);
    expect(error).toBeInstanceOf(GpuOutOfMemoryError);
    expect(error.message).toMatch(/over the budget of 9\.0 MiB; even with the routed experts in CPU memory and one per layer on the GPU it needs 9\.9 MiB; what would fit: a context of \d+ positions/);
    expect(made).toHaveLength(0);
    expect(phases).toEqual(['files']); // the headers were read; no weight byte was
    const fits = Number(/a context of (\d+) positions/.exec(error.message)![1]);
    const local = await createLocalEngine({ gpu, dir: nodeDir(officialFixture()), maxContext: fits, gpuBudgetMib: 9 });
    expect((await local.stats()).offload).toBeNull(); // all resident at that context
    await local.unload();
    // 10 MiB holds the 512 positions with the experts offloaded
    const offloaded = await createLocalEngine({ gpu, dir: nodeDir(officialFixture()), maxContext: 512, gpuBudgetMib: 10 });
    expect((await offloaded.stats()).offload?.expertSlots).toBeGreaterThanOrEqual(1);
    await offloaded.unload();
    await expect(createLocalEngine({ gpu, dir: nodeDir(officialFixture()), gpuBudgetMib: 0 })).rejects.toThrow(/gpuBudgetMib must be a positive number of MiB, got 0/);
  });

  it('plans with maxBindingMib: the stacked experts split by expert ranges, the same greedy ids', async () => {
    const gpu = await testGpu();
    const ids: number[][] = [];
    for (const maxBindingMib of [undefined, 0.16]) { // 0.16 MiB: over kv_b_proj (160 KiB, read whole), under a stack of 12 experts (192 KiB)
      const local = await createLocalEngine({ gpu, dir: nodeDir(officialFixture()), maxContext: 16, maxBindingMib });
      try {
        ids.push((await collect(local.generate([1, 2, 3], { temperature: 0, maxTokens: 3, ignoreEos: true }))).ids);
      } finally {
        await local.unload();
      }
    }
    expect(ids[1]).toEqual(ids[0]);
  });

  it("reports how the Linears are held: a BF16 release is 'fp8' by default, 'bf16' when asked; a bad mode is refused", async () => {
    const gpu = await testGpu();
    const release = generateCheckpoint({ config: { ...ODD, quantization_config: null }, seed: 5 });
    const dir = memoryDir('odd-bf16', Object.fromEntries(release.files));
    for (const weights of [undefined, 'bf16'] as const) {
      const local = await createLocalEngine({ gpu, dir, maxContext: 16, weights });
      try {
        expect(local.info.weights).toBe(weights ?? 'fp8');
        expect((await collect(local.generate([1, 2, 3], { temperature: 0, maxTokens: 2, ignoreEos: true }))).ids).toHaveLength(2);
      } finally {
        await local.unload();
      }
    }
    await expect(createLocalEngine({ gpu, dir, weights: 'int4' as 'fp8' })).rejects.toThrow(ArgumentError);
    // An FP8 release stays FP8 whatever is asked.
    const fp8Release = await createLocalEngine({ gpu, dir: nodeDir(officialFixture()), maxContext: 16, weights: 'bf16' });
    expect(fp8Release.info.weights).toBe('fp8');
    await fp8Release.unload();
  });
});
