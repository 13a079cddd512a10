import { expect, test, type Page } from '@playwright/test';
import type {} from '../src/pages/e2e/engine.ts'; // window.e2e's type

// The engine hosted in a dedicated Worker, driven from the page through the same API as the engine
// in the page's own thread: both load the generated checkpoint (public/models/tiny-random: random
// weights, vocab 320, no tokenizer, so token ids) over HTTP once for the whole file. SwiftShader
// is slow: a few tokens per request.
test.describe.configure({ mode: 'serial' });

let page: Page;

test.beforeAll(async ({ browser }) => {
  page = await browser.newPage();
  await page.goto('/e2e/engine.html');
  await page.waitForFunction(() => window.e2e !== undefined);
  const phases = await page.evaluate(async () => {
    const { createEngine, engines } = window.e2e;
    const phases: string[] = [];
    engines.worker = await createEngine({ model: '/models/tiny-random/', worker: true, cacheShards: false, onProgress: (p) => phases.push(p.phase) });
    engines.local = await createEngine({ model: '/models/tiny-random/', worker: false, cacheShards: false });
    return phases;
  });
  expect(phases).toContain('weights');
  expect(phases[phases.length - 1]).toBe('ready');
  expect(page.workers()).toHaveLength(1); // the engine's, with its own GPU device
});

test.afterAll(async () => {
  await page.evaluate(() => Promise.all(Object.values(window.e2e.engines).map((e) => e.unload())));
  await page.close();
});

test('the worker streams the same greedy tokens as the engine in the page', async () => {
  const { worker, local, info } = await page.evaluate(async () => {
    const { engines, collect } = window.e2e;
    const prompt = [1, 17, 42, 99, 5];
    const options = { temperature: 0, maxTokens: 5, ignoreEos: true };
    const worker = await collect(engines.worker.generate(prompt, options));
    const local = await collect(engines.local.generate(prompt, options));
    return { worker, local, info: { vocab: engines.worker.info.config.vocab_size, name: engines.worker.info.name } };
  });
  expect(info.vocab).toBe(320);
  expect(info.name).toContain('tiny-random');
  expect(worker.ids).toHaveLength(5);
  expect(worker.ids).toEqual(local.ids);
  expect(worker.chunks).toBeGreaterThan(1); // streamed, not one answer at the end
  expect(worker.done?.finishReason).toBe('length');
  expect(worker.done?.stats.generatedTokens).toBe(5);
});

test('logits cross as Float32Array rows equal to the in-page ones', async () => {
  const result = await page.evaluate(async () => {
    const { engines } = window.e2e;
    const ids = [3, 1, 4, 1, 5];
    const [worker, local] = await Promise.all([engines.worker.logits(ids, { positions: 'all' }), engines.local.logits(ids, { positions: 'all' })]);
    let worst = 0;
    worker.forEach((row, r) => row.forEach((v, j) => (worst = Math.max(worst, Math.abs(v - local[r][j])))));
    return { rows: worker.length, isF32: worker[0] instanceof Float32Array, width: worker[0].length, worst };
  });
  expect(result).toMatchObject({ rows: 5, isF32: true, width: 320 });
  expect(result.worst).toBeLessThan(1e-5);
});

test('an abort stops the generation in the worker with AbortError and releases its session', async () => {
  const result = await page.evaluate(async () => {
    const { engines, errors } = window.e2e;
    const controller = new AbortController();
    const seen: number[] = [];
    let caught: unknown;
    try {
      for await (const chunk of engines.worker.generate([2, 7, 1, 8], { temperature: 0, maxTokens: 60, ignoreEos: true, signal: controller.signal })) {
        seen.push(...chunk.ids);
        if (seen.length >= 2) controller.abort();
      }
    } catch (err) {
      caught = err;
    }
    const stats = await engines.worker.stats();
    return { seen: seen.length, isAbortError: caught instanceof errors.AbortError, code: (caught as { code?: string })?.code, sessions: stats.sessions };
  });
  expect(result.isAbortError).toBe(true);
  expect(result.code).toBe('ABORTED');
  expect(result.seen).toBeGreaterThanOrEqual(2);
  expect(result.seen).toBeLessThan(60);
  expect(result.sessions).toBe(0);
});

test('a bad URL fails on the page with the typed error from the worker', async () => {
  const result = await page.evaluate(async () => {
    const { createEngine, errors } = window.e2e;
    const failure = async (model: string) => {
      try {
        await createEngine({ model, worker: true, cacheShards: false });
        return undefined;
      } catch (err) {
        const e = err as InstanceType<typeof errors.WebmoeError> & { file?: string };
        return { missing: e instanceof errors.MissingFileError, fetch: e instanceof errors.FetchError, code: e.code, file: e.file, message: e.message };
      }
    };
    return { missing: await failure('/models/no-such-model/'), unreachable: await failure('http://localhost:1/models/x/') };
  });
  expect(result.missing).toMatchObject({ missing: true, code: 'MISSING_FILE', file: 'config.json' });
  expect(result.missing?.message).toContain('config.json not found');
  expect(result.unreachable).toMatchObject({ fetch: true, code: 'FETCH_FAILED' });
});

test('a CheckpointDir cannot cross to the worker; an unloaded engine says so', async () => {
  const result = await page.evaluate(async () => {
    const { createEngine, errors } = window.e2e;
    const dir = { description: 'in memory', open: async () => undefined, exists: async () => false } as never;
    const refused = await createEngine({ model: dir, worker: true }).catch((e: unknown) => e);
    const engine = await createEngine({ model: '/models/tiny-random/', worker: true, cacheShards: false });
    await Promise.all([engine.unload(), engine.unload()]);
    const after = await engine.stats().catch((e: unknown) => e as InstanceType<typeof errors.WebmoeError>);
    return { refused: refused instanceof errors.ArgumentError, message: (refused as Error).message, after: after instanceof errors.WebmoeError ? after.message : 'no error' };
  });
  expect(result.refused).toBe(true);
  expect(result.message).toContain('worker: false');
  expect(result.after).toContain('unloaded');
  // The failed loads' workers and the unloaded one are gone; the first engine's stays.
  await expect.poll(() => page.workers().length).toBe(1);
});
