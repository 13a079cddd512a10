import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { parseConfig } from '../config.ts';
import { readF32, uploadBuffer } from '../gpu/buffers.ts';
import { randn, relError, rng, testGpu, testSeed } from '../gpu/testing.ts';
import { rmsNormRef } from '../kernels/rmsnorm.ref.ts';
import { ropeRef } from '../kernels/rope_yarn.ref.ts';
import { officialFixture } from '../testing/fixtures.ts';
import { createLatentCache, latentCacheBytes, prepareCacheWrite } from './kv_cache.ts';
import { createMlaLatentNorm, type MlaLatentNormQ } from '../kernels/mla_latent_norm.ts';
import { submitPass } from '../gpu/kernel.ts';
import { testKernelContext } from '../gpu/testing.ts';
import { ropeInvFreq } from '../kernels/rope_tables.ts';

const latentNorm = async (qNorm: MlaLatentNormQ = 'none') => createMlaLatentNorm(await testKernelContext(), { qNorm });

const config = parseConfig(readFileSync(officialFixture('config.json'), 'utf8'));

describe('latent cache', () => {
  it('sizes layers at binding-aligned offsets: kv_lora_rank + qk_rope_head_dim values per token', async () => {
    const { device } = await testGpu();
    const cache = createLatentCache(device, config, 3, 37);
    expect(cache.width).toBe(256 + 32);
    expect(cache.layerStride % device.limits.minStorageBufferOffsetAlignment).toBe(0);
    expect(cache.buffer.size).toBe(latentCacheBytes(config, 3, 37, device.limits.minStorageBufferOffsetAlignment));
    expect(cache.buffer.size).toBeGreaterThanOrEqual(3 * 37 * 288 * 4);
    cache.destroy();
  });

  it('refuses a cache larger than the GPU allows, with a typed error', async () => {
    const { device } = await testGpu();
    expect(() => createLatentCache(device, config, 4, 1e9)).toThrow(/shorter context/);
  });

  it.each([
    [0, 1],
    [17, 13],
  ])('writes kv_a_layernorm(c_kv) and RoPE(k_pe) rows at positions %i.. (%i rows) of its layer, touching nothing else', async (startPos, rows) => {
    const { device } = await testGpu();
    const next = rng(testSeed(`latent cache write ${startPos}`));
    const width = config.latent_cache_dim;
    const rkv = config.kv_lora_rank;
    const maxT = 40;
    const cache = createLatentCache(device, config, 2, maxT);
    // NaN everywhere first: rows outside the write must stay NaN.
    device.queue.writeBuffer(cache.buffer, 0, new Float32Array(cache.buffer.size / 4).fill(Number.NaN));
    const kvA = randn(next, rows * width, 2);
    const weight = Float32Array.from({ length: rkv }, () => 1 + 0.1 * (next() - 0.5));
    const positions = Uint32Array.from({ length: rows }, (_, t) => startPos + t);
    const invFreq = ropeInvFreq(config);
    const buffers = {
      kvA: uploadBuffer(device, kvA, 'kv_a'),
      kvNormWeight: uploadBuffer(device, weight, 'kv_a_layernorm'),
      positions: uploadBuffer(device, positions, 'positions'),
      invFreq: uploadBuffer(device, invFreq, 'inv_freq'),
    };
    // Prepared at position 0 and moved: the decode plan's way (bind groups once, then setStartPos).
    const write = prepareCacheWrite(await latentNorm(), { config, cache, layer: 1, startPos: 0, rows, ...buffers });
    write.setStartPos(startPos);
    submitPass(device, write);
    const all = await readF32(device, cache.buffer);
    expect(Array.from(await readF32(device, buffers.kvA)), 'kv_a is read only').toEqual(Array.from(kvA));

    const want = kvA.slice();
    rmsNormRef({ rows, width: rkv, eps: config.rms_norm_eps, x: kvA.slice(), weight, y: want, xLayout: { stride: width, offset: 0 }, yLayout: { stride: width, offset: 0 } });
    ropeRef(want, { rows, heads: 1, ropeDim: config.qk_rope_head_dim, rowStride: width, headStride: width, ropeOffset: rkv }, positions, invFreq);
    const first = cache.layerOffset(1) / 4 + startPos * width;
    const got = all.subarray(first, first + rows * width);
    expect(relError(got, want).rel).toBeLessThan(1e-5);
    const outside = [...all.subarray(0, first), ...all.subarray(first + rows * width)];
    expect(outside.every(Number.isNaN)).toBe(true);

    write.destroy();
    cache.destroy();
    for (const b of Object.values(buffers)) b.destroy();
  });

  it('with q (q_lora_rank configs) normalises q_a into q_a_norm in the same call', async () => {
    const { device } = await testGpu();
    const next = rng(testSeed('latent cache write with q'));
    const width = config.latent_cache_dim;
    const qw = config.q_lora_rank!;
    const rows = 3;
    const cache = createLatentCache(device, config, 1, 8);
    const qA = randn(next, rows * qw, 2);
    const weight = Float32Array.from({ length: qw }, () => 1 + 0.1 * (next() - 0.5));
    const f = (data: Float32Array | Uint32Array, label: string) => uploadBuffer(device, data, label);
    const buffers = {
      kvA: f(randn(next, rows * width), 'kv_a'), kvNormWeight: f(new Float32Array(config.kv_lora_rank).fill(1), 'kv_a_layernorm'),
      positions: f(new Uint32Array([4, 5, 6]), 'positions'), invFreq: f(ropeInvFreq(config), 'inv_freq'),
    };
    const q = { qA: f(qA, 'q_a'), weight: f(weight, 'q_a_layernorm'), qANorm: f(new Float32Array(rows * qw).fill(Number.NaN), 'q_a_norm') };
    const write = prepareCacheWrite(await latentNorm('q_a_layernorm'), { config, cache, layer: 0, startPos: 4, rows, ...buffers, q });
    submitPass(device, write);
    const want = new Float32Array(rows * qw);
    rmsNormRef({ rows, width: qw, eps: config.rms_norm_eps, x: qA, weight, y: want });
    expect(relError(await readF32(device, q.qANorm), want).rel).toBeLessThan(1e-6);
    write.destroy();
    cache.destroy();
    for (const b of [...Object.values(buffers), ...Object.values(q)]) b.destroy();
  });

  it('refuses rows past the cache', async () => {
    const { device } = await testGpu();
    const cache = createLatentCache(device, config, 1, 8);
    const b = uploadBuffer(device, new Float32Array(288 * 4), 'b');
    const kernel = await latentNorm();
    expect(() =>
      prepareCacheWrite(kernel, { config, cache, layer: 0, startPos: 6, rows: 4, kvA: b, kvNormWeight: b, positions: b, invFreq: b }),
    ).toThrow(/latent_norm.0: cache rows 6..9 do not fit its 8 positions/);
    const write = prepareCacheWrite(kernel, { config, cache, layer: 0, startPos: 0, rows: 4, kvA: b, kvNormWeight: b, positions: b, invFreq: b });
    expect(() => write.setStartPos(5)).toThrow(/do not fit/);
    write.destroy();
    cache.destroy();
    b.destroy();
  });
});
