// createEngine's `fallback`: local when WebGPU is there and the memory plan fits, else the same
// Engine over a webmoe serve on loopback, with the reason in info.backend. Node has no
// navigator.gpu, so "no WebGPU" is this process as it is; "does not fit" is a GPU budget below
// the shipped model's plan. A checkpoint that is broken is no reason to go remote: it still fails.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEngine } from './create_engine.ts';
import { MissingFileError, NoWebGPUError } from './errors.ts';
import { testGpu } from './gpu/testing.ts';
import { nodeDir } from './io/node_source.ts';
import type { Engine } from './runtime/types.ts';
import { startServer, type WebmoeServer } from './server/server.ts';
import { SHIPPED_MODEL, shippedEngine } from './server/testing.ts';

let served: Engine;
let server: WebmoeServer;
let fallback: { baseURL: string; model: string };

beforeAll(async () => {
  served = await shippedEngine();
  server = await startServer({ engine: served, modelId: 'kjv', port: 0 });
  fallback = { baseURL: server.baseURL, model: 'kjv' };
});
afterAll(async () => {
  await server?.close();
  await served?.unload();
});

const reply = async (engine: Engine) => (await engine.chat.completions.create({ messages: [{ role: 'user', content: 'In the beginning' }], max_tokens: 3, temperature: 0 })).choices[0].message.content;

describe('createEngine with a fallback', () => {
  it('without WebGPU it is the remote engine, and says why', async () => {
    expect(globalThis.navigator?.gpu).toBeUndefined();
    await expect(createEngine({ model: nodeDir(SHIPPED_MODEL), worker: false })).rejects.toBeInstanceOf(NoWebGPUError);
    const engine = await createEngine({ model: nodeDir(SHIPPED_MODEL), worker: false, fallback });
    try {
      expect(engine.info.backend).toMatchObject({ kind: 'remote', baseURL: server.baseURL, model: 'kjv', server: 'webmoe', localRefusal: 'NO_WEBGPU', reason: expect.stringMatching(/^not run locally: /) });
      expect(engine.info.config.vocab_size).toBe(8192);
      expect(await reply(engine)).toBe(await reply(served));
      expect((await engine.stats()).remote?.baseURL).toBe(server.baseURL);
    } finally {
      await engine.unload();
    }
  });

  it('when the memory plan does not fit the GPU budget, it is remote (refused before the download)', async () => {
    const engine = await createEngine({ model: nodeDir(SHIPPED_MODEL), gpu: await testGpu(), gpuBudgetMib: 1, fallback });
    try {
      expect(engine.info.backend).toMatchObject({ kind: 'remote', localRefusal: 'OUT_OF_MEMORY', reason: expect.stringMatching(/MiB/) });
      expect(await reply(engine)).toBe(await reply(served));
    } finally {
      await engine.unload();
    }
  });

  it('when it fits, it is local, and says so', async () => {
    const engine = await createEngine({ model: nodeDir(SHIPPED_MODEL), gpu: await testGpu(), fallback });
    try {
      expect(engine.info.backend).toEqual({ kind: 'local', reason: 'WebGPU is available and the memory plan fits this GPU' });
      expect((await engine.stats()).gpuBuffers).toBeGreaterThan(0);
      expect(await reply(engine)).toBe(await reply(served));
    } finally {
      await engine.unload();
    }
  });

  it('a broken checkpoint fails as it would without a fallback', async () => {
    await expect(createEngine({ model: nodeDir('/nonexistent/model'), gpu: await testGpu(), fallback })).rejects.toBeInstanceOf(MissingFileError);
  });
});
