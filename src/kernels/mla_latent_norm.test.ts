// mla_latent_norm on the GPU (SwiftShader here) against its reference, on odd shapes (rkv, dr / 2 and
// q_lora_rank multiples of nothing, row counts past one CPU workgroup), both dispatch strategies and
// both q_norm variants, outputs poisoned with NaN. The norms must equal the rmsnorm kernel's bit for
// bit (the same arithmetic in the same order); RoPE'd k_pe within rope_yarn.test.ts's bound of 1e-6
// per pair of the float64 reference (positions < 4096); nothing outside the written cache rows moves.

import { describe, expect, it } from 'vitest';
import { ArgumentError } from '../errors.ts';
import { readF32, uploadBuffer } from '../gpu/buffers.ts';
import { submitPass } from '../gpu/kernel.ts';
import { randn, relError, rng, testKernelContext, testSeed } from '../gpu/testing.ts';
import { createMlaLatentNorm, type MlaLatentNormQ } from './mla_latent_norm.ts';
import { mlaLatentNormRef } from './mla_latent_norm.ref.ts';
import { createRmsNorm } from './rmsnorm.ts';
import { ropeInvFreq } from './rope_tables.ts';

const ROPE_DIM = 10; // 5 pairs
const INV_FREQ = ropeInvFreq({
  qk_rope_head_dim: ROPE_DIM,
  rope_theta: 10000,
  rope_scaling: { factor: 8, original_max_position_embeddings: 64, beta_fast: 32, beta_slow: 1 },
});
const [RKV, QW, EPS, CACHE_ROWS] = [37, 45, 1e-6, 90];

const cases: { qNorm: MlaLatentNormQ; rowPerThread: boolean }[] = [
  { qNorm: 'q_a_layernorm', rowPerThread: true },
  { qNorm: 'q_a_layernorm', rowPerThread: false },
  { qNorm: 'none', rowPerThread: true },
  { qNorm: 'none', rowPerThread: false },
];

describe('mla_latent_norm', () => {
  it.each(cases)('q_norm $qNorm, rowPerThread $rowPerThread: q_a norm and cache rows [RMSNorm(c_kv) | RoPE(k_pe)]', async ({ qNorm, rowPerThread }) => {
    const ctx = await testKernelContext();
    const { device } = ctx.gpu;
    const kernel = createMlaLatentNorm(ctx, { qNorm, rowPerThread });
    const rmsnorm = createRmsNorm(ctx, { rowPerThread });
    const width = RKV + ROPE_DIM;
    const seed = testSeed(`mla_latent_norm ${qNorm} ${rowPerThread}`);
    const next = rng(seed);
    for (const [rows, startPos] of [[1, 0], [5, 41], [70, 20]]) {
      const what = `seed ${seed}: ${rows} rows at ${startPos}`;
      const kvA = randn(next, rows * width, 2);
      const kvWeight = Float32Array.from({ length: RKV }, () => 1 + 0.2 * (next() - 0.5));
      const qA = randn(next, rows * QW, 3);
      const qWeight = Float32Array.from({ length: QW }, () => 1 + 0.2 * (next() - 0.5));
      const positions = Uint32Array.from({ length: rows }, () => Math.floor(next() * 4096));
      const buf = {
        kvA: uploadBuffer(device, kvA, 'kv_a'),
        kvNormWeight: uploadBuffer(device, kvWeight, 'kv_a_layernorm'),
        positions: uploadBuffer(device, positions, 'positions'),
        invFreq: uploadBuffer(device, INV_FREQ, 'inv_freq'),
        // the layer's binding starts past a poisoned prefix (another layer's rows)
        cacheBuffer: uploadBuffer(device, new Float32Array(64 + CACHE_ROWS * width).fill(NaN), 'cache'),
        qA: uploadBuffer(device, qA, 'q_a'),
        qWeight: uploadBuffer(device, qWeight, 'q_a_layernorm'),
        qANorm: uploadBuffer(device, new Float32Array(rows * QW).fill(NaN), 'q_a_norm'),
        // the separate rmsnorm kernel's outputs, for the bit-for-bit comparison
        qNormSeparate: uploadBuffer(device, new Float32Array(rows * QW).fill(NaN), 'q_a_norm_separate'),
        kvNormSeparate: uploadBuffer(device, new Float32Array(rows * RKV).fill(NaN), 'c_hat_separate'),
      };
      const offset = 256; // bytes: a binding-aligned layer offset
      const cache = { buffer: buf.cacheBuffer, offset, size: 4 * CACHE_ROWS * width };
      const q = qNorm === 'q_a_layernorm' ? { width: QW, qA: buf.qA, weight: buf.qWeight, qANorm: buf.qANorm } : undefined;
      // Prepared at position 0, then moved: the decode plan's way.
      const call = kernel.prepare({ rows, kvLoraRank: RKV, ropeDim: ROPE_DIM, eps: EPS, ...buf, cache, cacheRows: CACHE_ROWS, startPos: 0, q });
      call.setStartPos(startPos);
      const separate = [
        rmsnorm.prepare({ rows, width: QW, eps: EPS, x: buf.qA, weight: buf.qWeight, y: buf.qNormSeparate }),
        rmsnorm.prepare({ rows, width: RKV, eps: EPS, x: buf.kvA, weight: buf.kvNormWeight, y: buf.kvNormSeparate, xLayout: { stride: width, offset: 0 } }),
      ];
      submitPass(device, call, ...separate);
      const all = await readF32(device, buf.cacheBuffer);
      const gotQ = await readF32(device, buf.qANorm);
      const [qSeparate, kvSeparate] = [await readF32(device, buf.qNormSeparate), await readF32(device, buf.kvNormSeparate)];

      const wantCache = new Float32Array(CACHE_ROWS * width).fill(NaN);
      const wantQ = new Float32Array(rows * QW).fill(NaN);
      mlaLatentNormRef({
        rows, kvLoraRank: RKV, ropeDim: ROPE_DIM, eps: EPS, kvA, kvNormWeight: kvWeight, positions, invFreq: INV_FREQ, cache: wantCache, startPos,
        q: q && { width: QW, qA, weight: qWeight, qANorm: wantQ },
      });
      const got = all.subarray(offset / 4);
      expect(all.subarray(0, offset / 4).every(Number.isNaN), `${what}: before the layer's binding`).toBe(true);
      for (let i = 0; i < got.length; i++) {
        const t = Math.floor(i / width) - startPos;
        if (t < 0 || t >= rows) expect(Number.isNaN(got[i]), `${what}: cache[${i}] outside the step's rows was written`).toBe(true);
      }
      for (let t = 0; t < rows; t++) {
        const row = got.subarray((startPos + t) * width, (startPos + t + 1) * width);
        const want = wantCache.subarray((startPos + t) * width, (startPos + t + 1) * width);
        // c_hat: the rmsnorm kernel's bits; and near the float64 reference
        expect(new Uint32Array(row.slice(0, RKV).buffer), `${what}: c_hat row ${t} vs rmsnorm`).toEqual(new Uint32Array(kvSeparate.slice(t * RKV, (t + 1) * RKV).buffer));
        expect(relError(row.subarray(0, RKV), want.subarray(0, RKV)).rel, `${what}: c_hat row ${t}`).toBeLessThan(1e-6);
        for (let i = RKV; i < width; i += 2) {
          const norm = Math.hypot(want[i], want[i + 1]);
          const err = Math.max(Math.abs(row[i] - want[i]), Math.abs(row[i + 1] - want[i + 1])) / norm;
          expect(err, `${what}: k_pe row ${t} pair ${(i - RKV) / 2}: got (${row[i]}, ${row[i + 1]}) want (${want[i]}, ${want[i + 1]})`).toBeLessThan(1e-6);
        }
      }
      if (q) {
        expect(new Uint32Array(gotQ.buffer), `${what}: q_a_norm vs rmsnorm`).toEqual(new Uint32Array(qSeparate.buffer));
        expect(relError(gotQ, wantQ).rel, `${what}: q_a_norm`).toBeLessThan(1e-6);
      } else {
        expect(gotQ.every(Number.isNaN), `${what}: no q_a_norm without the q norm`).toBe(true);
      }
      for (const c of [call, ...separate]) c.destroy();
      for (const b of Object.values(buf)) b.destroy();
    }
  });

  it('refuses what it cannot compute with typed errors', async () => {
    const ctx = await testKernelContext();
    const { device } = ctx.gpu;
    const b = uploadBuffer(device, new Float32Array(4 * 47 * 8), 'b');
    const withQ = createMlaLatentNorm(ctx, { qNorm: 'q_a_layernorm' });
    const withoutQ = createMlaLatentNorm(ctx, { qNorm: 'none' });
    const q = { width: 45, qA: b, weight: b, qANorm: b };
    const ok = { rows: 4, kvLoraRank: RKV, ropeDim: ROPE_DIM, eps: EPS, kvA: b, kvNormWeight: b, positions: b, invFreq: b, cache: b, cacheRows: 8, startPos: 0 };
    expect(() => withQ.prepare(ok)).toThrow(/q \(q_a and q_a_layernorm\) is given exactly to the q_a_layernorm variant/);
    expect(() => withoutQ.prepare({ ...ok, q })).toThrow(ArgumentError);
    expect(() => withoutQ.prepare({ ...ok, ropeDim: 9 })).toThrow(/ropeDim must be positive and even, got 9/);
    expect(() => withoutQ.prepare({ ...ok, startPos: 5 })).toThrow(/cache rows 5..8 do not fit its 8 positions/);
    expect(() => withoutQ.prepare({ ...ok, cacheRows: 40 })).toThrow(/cache holds 6016 bytes, needs 7520/);
    expect(() => withQ.prepare({ ...ok, q: { ...q, width: 400 } })).toThrow(/qA holds 6016 bytes, needs 6400/);
    const call = withoutQ.prepare(ok);
    expect(() => call.setStartPos(6)).toThrow(/do not fit/);
    call.destroy();
    b.destroy();
  });
});
