// A GPU-buffer ledger soak: many requests, kept sessions, aborts, logits, dropped iterators and a
// burst over the cache budget on one engine, then an unload. Every buffer the engine made after
// loading is destroyed by the time its sessions are closed, and none at all is left after unload;
// stats() counts exactly the buffers the ledger sees as live.

import { describe, expect, it } from 'vitest';
import { AbortError, PromptTooLongError } from '../errors.ts';
import { testGpu } from '../gpu/testing.ts';
import { nodeDir } from '../io/node_source.ts';
import { officialFixture } from '../testing/fixtures.ts';
import { trackingDevice } from '../testing/tracking_device.ts';
import { createLocalEngine } from './engine.ts';
import type { GenerateChunk } from './types.ts';

async function drain(chunks: AsyncIterable<GenerateChunk>): Promise<number> {
  let n = 0;
  for await (const chunk of chunks) n += chunk.ids.length;
  return n;
}

describe('engine soak', () => {
  it('leaves no GPU buffer behind after 48 mixed requests, and none after unload', async () => {
    const gpu = await testGpu();
    const { device, made } = trackingDevice(gpu.device);
    const engine = await createLocalEngine({ gpu: { ...gpu, device }, dir: nodeDir(officialFixture()), maxContext: 256, cacheBudgetBytes: 4 * 2 ** 20 });
    const live = () => made.filter((b) => !b.destroyed).length;
    const loaded = live();
    // stats() counts the same buffers as this ledger: the weights and the norms' f32 copies, and nothing else yet.
    expect((await engine.stats()).gpuBuffers).toBe(loaded);
    let tried = 0;
    let refused = 0;
    try {
      for (let round = 0; round < 8; round++) {
        // A burst of short requests (some wait for cache memory), one of them aborted.
        const controller = new AbortController();
        const burst = Array.from({ length: 4 }, (_, i) =>
          drain(engine.generate([1 + ((round + i) % 300), 2, 3], { temperature: 0.7, seed: round, maxTokens: 3, ignoreEos: true, signal: i === 3 ? controller.signal : undefined })),
        );
        controller.abort();
        for (const r of await Promise.allSettled(burst)) {
          tried++;
          if (r.status === 'rejected') {
            expect(r.reason).toBeInstanceOf(AbortError);
            refused++;
          }
        }
        // A kept session over two turns, then closed.
        const session = await engine.createSession();
        await drain(engine.generate([4, 5, 6], { session, temperature: 0, maxTokens: 2 }));
        await drain(engine.generate([7], { session, temperature: 0, maxTokens: 2 }));
        const held = await engine.stats();
        expect(held.gpuBuffers).toBe(live()); // the session's cache, plans and uniforms are counted
        expect(held.gpuBytes).toBeGreaterThan(held.weightBytes + held.cacheBytes);
        await engine.closeSession(session);
        // Logits, and a request too long for the budget.
        await engine.logits([1, 2, 3, 4], { positions: 'all' });
        await expect(drain(engine.generate(new Array(300).fill(5), { maxTokens: 1 }))).rejects.toBeInstanceOf(PromptTooLongError);
        tried += 4;
      }
      expect((await engine.stats()).sessions).toBe(0);
      expect(live(), `buffers live after ${tried} requests (${refused} aborted)`).toBe(loaded);
      expect((await engine.stats()).gpuBuffers).toBe(loaded);
    } finally {
      await engine.unload();
    }
    expect(made.filter((b) => !b.destroyed && b.label !== 'readback')).toEqual([]);
  }, 120_000);
});
