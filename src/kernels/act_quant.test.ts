// act_quant (W8A8 activation quantisation) against its reference and the official act_quant
// outputs in the dsv3-tiny-official fixture: scales bit-exact, codes exact except where x / s lies
// within a few f32 ulps of an e4m3 midpoint (WGSL's division may be off by 2.5 ulp there); with
// scale_fmt "ue8m0" (power-of-two scales, an exact quotient) every code exact.

import { beforeAll, describe, expect, it } from 'vitest';
import { createStorageBuffer, readF32, readU32, uploadBuffer } from '../gpu/buffers.ts';
import type { Gpu } from '../gpu/device.ts';
import { randn, rng, testGpu, testSeed } from '../gpu/testing.ts';
import { ArgumentError } from '../errors.ts';
import { createActQuant, createActRound, type ActScaleFormat } from './act_quant.ts';
import { actQuantRef, AMAX_FLOOR, roundUpPow2, type ActQuantized } from './act_quant.ref.ts';
import { E4M3_VALUES } from './fp8_e4m3.ref.ts';
import { createGemm } from './gemm_fp8.ts';
import { matmulRef } from './gemm_fp8.ref.ts';
import { expectClose, fp8GemmCases, poisonedOutput } from '../testing/matmul_testing.ts';
import { PipelineCache } from '../gpu/pipeline_cache.ts';
import { submitPass } from '../gpu/kernel.ts';

let gpu: Gpu;
let cache: PipelineCache;
beforeAll(async () => {
  gpu = await testGpu();
  cache = new PipelineCache(gpu.device);
});

/** Run act_quant on the GPU; the codes and scales come back as the reference returns them. */
async function actQuantGpu(x: Float32Array, M: number, K: number, scaleFormat: ActScaleFormat = 'f32'): Promise<ActQuantized & { buffers: GPUBuffer[] }> {
  const { device } = gpu;
  const xBuffer = uploadBuffer(device, x, 'x');
  const codes = uploadBuffer(device, new Uint32Array((M * K) / 4).fill(0xffffffff), 'codes'); // NaN codes: poison
  const scales = poisonedOutput(device, (M * K) / 128, 'scales');
  const call = createActQuant({ gpu, pipelines: cache }, { scaleFormat }).prepare({ M, K, x: xBuffer, codes, scales });
  submitPass(device, call);
  const out = {
    codes: new Uint8Array((await readU32(device, codes, (M * K) / 4)).buffer),
    scales: await readF32(device, scales, (M * K) / 128),
    buffers: [xBuffer, codes, scales],
  };
  call.destroy();
  return out;
}

/** Where x / s (in f64) lies within `ulps` f32 ulps of the midpoint between two e4m3 values. */
function nearTie(x: number, s: number, ulps = 4): boolean {
  const q = Math.abs(x / s);
  for (let c = 0; c < 0x7e; c++) {
    const mid = (E4M3_VALUES[c] + E4M3_VALUES[c + 1]) / 2;
    if (Math.abs(q - mid) <= ulps * mid * 2 ** -23) return true;
  }
  return false;
}

function expectSameCodes(got: Uint8Array, want: Uint8Array, allowed: (i: number) => boolean, what: string): number {
  let excused = 0;
  for (let i = 0; i < want.length; i++) {
    if (got[i] === want[i]) continue;
    expect(allowed(i), `${what}: code [${i}] got 0x${got[i].toString(16)} want 0x${want[i].toString(16)}`).toBe(true);
    excused++;
  }
  return excused;
}

describe('act_quant', () => {
  it('matches the reference on every magnitude, all-zero groups included', async () => {
    const seed = testSeed('act_quant');
    const next = rng(seed);
    const M = 96;
    const K = 384;
    // each 128-group gets its own magnitude 2^-20 .. 2^20, so amax covers every significand
    const x = randn(next, M * K).map((v, i) => (Math.floor(i / 128) % 17 === 3 ? 0 : v * 2 ** Math.round(40 * next() - 20)));
    const ref = actQuantRef(x, M, K);
    const out = await actQuantGpu(x, M, K);
    expect(Array.from(out.scales)).toEqual(Array.from(ref.scales));
    expect(ref.scales).toContain(Math.fround(AMAX_FLOOR / 448)); // the floor of an all-zero group
    expectSameCodes(out.codes, ref.codes, (i) => nearTie(x[i], ref.scales[Math.floor(i / 128)]), 'random');
    out.buffers.forEach((b) => b.destroy());
  });

  it("scale_fmt ue8m0 (V3.1): every scale is amax / 448 rounded up to a power of two, bit for bit the reference", async () => {
    const next = rng(testSeed('act_quant ue8m0'));
    const M = 37;
    const K = 256;
    const x = randn(next, M * K).map((v, i) => v * 2 ** Math.round(30 * next() - 15) * (Math.floor(i / 128) % 5 === 1 ? 0 : 1));
    // Row 0, group 0: amax 448 * 2^-3, so amax / 448 is already a power of two and must stay.
    x.fill(0.01, 0, 128);
    x[5] = -448 / 8;
    const plain = actQuantRef(x, M, K);
    const ref = actQuantRef(x, M, K, 'ue8m0');
    const out = await actQuantGpu(x, M, K, 'ue8m0');
    try {
      expect(Array.from(out.scales)).toEqual(Array.from(ref.scales));
      // s is a power of two, so x / s is exact (the kernel multiplies by 2^-e): every code, ties included
      expectSameCodes(out.codes, ref.codes, () => false, 'ue8m0');
      expect(ref.scales[0]).toBe(1 / 8);
      expect(plain.scales[0]).toBe(1 / 8);
      expect(ref.scales).toContain(2 ** -22); // the 1e-4 clamp applies too: 1e-4 / 448 rounds up to 2^-22
      let raised = 0;
      ref.scales.forEach((s, g) => {
        expect(Number.isInteger(Math.log2(s)), `scale ${g} = ${s}`).toBe(true);
        // up, never down: the smallest power of two >= the plain scale
        expect(s >= plain.scales[g] && s / 2 < plain.scales[g]).toBe(true);
        if (s > plain.scales[g]) raised++;
      });
      expect(raised).toBeGreaterThan(M); // most scales really moved
      expect([roundUpPow2(0.75), roundUpPow2(1), roundUpPow2(Math.fround(1 + 2 ** -23)), roundUpPow2(2 ** -20)]).toEqual([1, 1, 2, 2 ** -20]);
    } finally {
      out.buffers.forEach((b) => b.destroy());
    }
  });

  for (const [scaleFormat, copy] of [['f32', false], ['ue8m0', false], ['f32', true], ['ue8m0', true]] as const) {
    it(`dequantized output (${scaleFormat} scales, ${copy ? 'into another buffer, x kept' : 'in place'}): each value becomes e4m3(code) * scale, exactly (but near ties)`, async () => {
      const next = rng(testSeed('act_round'));
      const M = 5;
      const K = 256;
      const x = randn(next, M * K).map((v, i) => v * 2 ** ((Math.floor(i / 128) % 5) - 2));
      const ref = actQuantRef(x, M, K, scaleFormat);
      const xBuffer = uploadBuffer(gpu.device, x, 'x');
      const rounded = copy ? poisonedOutput(gpu.device, M * K, 'rounded') : undefined;
      const call = createActRound({ gpu, pipelines: cache }, { scaleFormat }).prepare({ M, K, x: xBuffer, rounded });
      submitPass(gpu.device, call);
      const got = await readF32(gpu.device, rounded ?? xBuffer);
      let excused = 0;
      for (let i = 0; i < M * K; i++) {
        const want = Math.fround(E4M3_VALUES[ref.codes[i] & 0x7f] * (ref.codes[i] & 0x80 ? -1 : 1) * ref.scales[Math.floor(i / 128)]);
        if (got[i] === want) continue;
        expect(nearTie(x[i], ref.scales[Math.floor(i / 128)]), `x[${i}] = ${x[i]}: got ${got[i]}, want ${want}`).toBe(true);
        excused++;
      }
      expect(excused).toBeLessThan(scaleFormat === 'ue8m0' ? 1 : 3); // ue8m0: x / s is exact
      if (copy) expect(await readF32(gpu.device, xBuffer)).toEqual(x);
      expect(() => createActRound({ gpu, pipelines: cache }).prepare({ M, K: 200, x: xBuffer })).toThrow(ArgumentError);
      expect(() => createActRound({ gpu, pipelines: cache }).prepare({ M, K, x: xBuffer, rounded: xBuffer })).toThrow(/another buffer/);
      call.destroy();
      xBuffer.destroy();
      rounded?.destroy();
    });
  }

  it('reproduces the official act_quant codes and scales of the fp8_gemm cases', async () => {
    for (const c of fp8GemmCases()) {
      const ties = new Set(c.nearTies.map(([m, k]) => m * c.K + k));
      const ref = actQuantRef(c.x, c.M, c.K);
      expect(Array.from(ref.scales), c.hf_weight).toEqual(Array.from(c.scales));
      expectSameCodes(ref.codes, c.codes, () => false, `${c.hf_weight} reference`); // exact f32 division: every code
      const out = await actQuantGpu(c.x, c.M, c.K);
      expect(Array.from(out.scales), c.hf_weight).toEqual(Array.from(c.scales));
      expectSameCodes(out.codes, c.codes, (i) => ties.has(i), `${c.hf_weight} GPU`);
      out.buffers.forEach((b) => b.destroy());
    }
  });

  it('feeds gemm_fp8 w8a8 in one pass, as the engine records it', async () => {
    const { device } = gpu;
    const c = fp8GemmCases()[4]; // o_proj: K = 384, three activation groups
    const x = uploadBuffer(device, c.x, 'x');
    const codes = createStorageBuffer(device, c.M * c.K, 'codes');
    const scales = createStorageBuffer(device, (4 * c.M * c.K) / 128, 'scales');
    const weight = uploadBuffer(device, c.weight.bytes, 'weight');
    const weight_scale_inv = uploadBuffer(device, c.weight.scale!, 'weight_scale_inv');
    const y = poisonedOutput(device, c.M * c.N);
    const quant = createActQuant({ gpu, pipelines: cache }).prepare({ M: c.M, K: c.K, x, codes, scales });
    const gemm = createGemm({ gpu, pipelines: cache }, { numerics: 'w8a8' }).prepare({ M: c.M, N: c.N, K: c.K, x: codes, x_scale: scales, weight, weight_scale_inv, y });
    submitPass(device, quant, gemm);
    const got = await readF32(device, y, c.M * c.N);
    const quantized = { codes: new Uint8Array((await readU32(device, codes, (c.M * c.K) / 4)).buffer), scales: await readF32(device, scales, c.M * 3) };
    expectClose(got, matmulRef({ M: c.M, N: c.N, K: c.K, weight: c.weight, activations: { numerics: 'w8a8', ...quantized } }), 2e-6, 'act_quant -> gemm');
    for (const b of [x, codes, scales, weight, weight_scale_inv, y]) b.destroy();
    quant.destroy();
    gemm.destroy();
  });

  it('refuses K that is not a multiple of 128, as the official kernel asserts', () => {
    const buffer = gpu.device.createBuffer({ size: 4096, usage: GPUBufferUsage.STORAGE });
    const quant = createActQuant({ gpu, pipelines: cache });
    expect(() => quant.prepare({ M: 1, K: 200, x: buffer, codes: buffer, scales: buffer })).toThrow(ArgumentError);
    expect(() => quant.prepare({ M: 1, K: 200, x: buffer, codes: buffer, scales: buffer })).toThrow(/multiple of 128/);
    expect(() => quant.prepare({ M: 4, K: 384, x: buffer, codes: buffer, scales: buffer })).toThrow(/x holds 4096 bytes, M=4 K=384 needs 6144/);
    expect(() => actQuantRef(new Float32Array(200), 1, 200)).toThrow(/multiple of 128/);
    buffer.destroy();
  });
});
