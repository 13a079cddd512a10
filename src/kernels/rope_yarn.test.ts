// RoPE on the GPU (SwiftShader here) against the reference, which takes the same float32 angle
// (position * inv_freq, as torch does) and evaluates cos, sin and the rotation in float64.
//
// Error bound per pair, relative to its norm |(x0, x1)| (see sin_cos in the shader): the angle
// reduction adds k * 1.1e-11 + 1 ulp of the reduced angle (k = angle / (pi/2); 9e-8 for angles
// below 4096), the Taylor series 2e-9, the float32 evaluation of cos and sin 2.4e-7, the rotation
// (two products and a sum in float32) 2.4e-7: under 6e-7 in all. Tests allow 1e-6 per pair up to
// position 4096, and 2e-6 at V3's largest position 163839, where the reduction adds up to 1.2e-6
// (k ~ 1e5). Measured on SwiftShader: 6e-8 and 7.3e-7 (its builtin cos/sin: 3.6e-4 and 1.2e-2).

import { describe, expect, it } from 'vitest';
import { readF32, readU32, uploadBuffer } from '../gpu/buffers.ts';
import { randn, relError, rng, testGpu, testKernelContext, testSeed } from '../gpu/testing.ts';
import { ropeInvFreq } from './rope_tables.ts';
import { ropeRef, type RopeSlices } from './rope_yarn.ref.ts';
import { createRopeYarn, ropeYarnCost, writeConsecutivePositions } from './rope_yarn.ts';
import { submitPass } from '../gpu/kernel.ts';

const TINY = ropeInvFreq({
  qk_rope_head_dim: 32,
  rope_theta: 10000,
  rope_scaling: { factor: 8, original_max_position_embeddings: 64, beta_fast: 32, beta_slow: 1 },
});
const V3 = ropeInvFreq({
  qk_rope_head_dim: 64,
  rope_theta: 10000,
  rope_scaling: { factor: 40, original_max_position_embeddings: 4096, beta_fast: 32, beta_slow: 1 },
});

/** Fill everything outside the rope slices with NaN: the kernel must neither read nor write it. */
function poisonOutsideSlices(x: Float32Array, s: RopeSlices): void {
  const inside = new Uint8Array(x.length);
  for (let t = 0; t < s.rows; t++) {
    for (let h = 0; h < s.heads; h++) {
      const start = t * s.rowStride + h * s.headStride + s.ropeOffset;
      inside.fill(1, start, start + s.ropeDim);
    }
  }
  for (let i = 0; i < x.length; i++) if (!inside[i]) x[i] = Number.NaN;
}

async function rotateOnGpu(x: Float32Array, s: RopeSlices, positions: Uint32Array, invFreq: Float32Array): Promise<Float32Array> {
  const { device } = await testGpu();
  const xBuf = uploadBuffer(device, x, 'x');
  const pBuf = uploadBuffer(device, positions, 'positions');
  const fBuf = uploadBuffer(device, invFreq, 'inv_freq');
  device.pushErrorScope('validation');
  const op = createRopeYarn(await testKernelContext()).prepare({ ...s, x: xBuf, positions: pBuf, invFreq: fBuf });
  submitPass(device, op);
  expect((await device.popErrorScope())?.message).toBeUndefined();
  const out = await readF32(device, xBuf, x.length);
  for (const b of [xBuf, pBuf, fBuf]) b.destroy();
  op.destroy();
  return out;
}

/** Per pair |gpu − ref| <= perPair * |(x0, x1)|, and NaN exactly where the input had NaN. */
function expectRotated(got: Float32Array, input: Float32Array, want: Float32Array, perPair: number, what: string): void {
  const g: number[] = [];
  const w: number[] = [];
  let worst = 0;
  let worstAt = -1;
  for (let i = 0; i < want.length; i++) {
    if (Number.isNaN(input[i])) {
      expect(Number.isNaN(got[i]), `${what}: x[${i}] outside the slices was written`).toBe(true);
      continue;
    }
    g.push(got[i]);
    w.push(want[i]);
  }
  // The non-NaN elements, in order, are the slices back to back: pairs are consecutive twos.
  for (let k = 0; k + 1 < g.length; k += 2) {
    const norm = Math.hypot(w[k], w[k + 1]);
    const err = Math.max(Math.abs(g[k] - w[k]), Math.abs(g[k + 1] - w[k + 1])) / norm;
    if (!(err <= worst)) {
      worst = err;
      worstAt = k;
    }
  }
  const sideBySide = `got (${g[worstAt]}, ${g[worstAt + 1]}) want (${w[worstAt]}, ${w[worstAt + 1]})`;
  expect(worst, `${what}: worst pair ${worstAt}: ${sideBySide}`).toBeLessThan(perPair);
  expect(relError(g, w).rel, what).toBeLessThan(perPair);
}

async function checkCase(s: RopeSlices, positions: Uint32Array, invFreq: Float32Array, perPair: number, seed: number): Promise<void> {
  const length = (s.rows - 1) * s.rowStride + (s.heads - 1) * s.headStride + s.ropeOffset + s.ropeDim + 3;
  const x = randn(rng(seed), length, 2);
  poisonOutsideSlices(x, s);
  const want = x.slice();
  ropeRef(want, s, positions, invFreq);
  const got = await rotateOnGpu(x, s, positions, invFreq);
  expectRotated(got, x, want, perPair, JSON.stringify(s));
}

function randomPositions(next: () => number, rows: number, max: number): Uint32Array {
  const p = new Uint32Array(rows);
  for (let t = 0; t < rows; t++) p[t] = Math.floor(next() * max);
  p[0] = max - 1; // the largest angle always appears
  return p;
}

describe('rope_yarn kernel', () => {
  it('rotates q rope slices [T, H, dn + dr] (fixture shape, positions < 4096)', async () => {
    const seed = testSeed('rope q');
    const next = rng(seed);
    for (const rows of [1, 7, 33]) {
      const s: RopeSlices = { rows, heads: 8, ropeDim: 32, rowStride: 8 * 64, headStride: 64, ropeOffset: 32 };
      await checkCase(s, randomPositions(next, rows, 4096), TINY, 1e-6, seed + rows);
    }
  });

  it('rotates k_pe, the last dr of each kv_a_proj_with_mqa row [T, rkv + dr], with an odd rkv', async () => {
    const seed = testSeed('rope k_pe');
    const s: RopeSlices = { rows: 9, heads: 1, ropeDim: 32, rowStride: 37 + 32, headStride: 0, ropeOffset: 37 };
    await checkCase(s, randomPositions(rng(seed), 9, 4096), TINY, 1e-6, seed);
  });

  it('handles V3 sizes (dr 64) at positions up to max_position_embeddings 163840', async () => {
    const seed = testSeed('rope V3 far');
    const s: RopeSlices = { rows: 5, heads: 3, ropeDim: 64, rowStride: 3 * 192, headStride: 192, ropeOffset: 128 };
    await checkCase(s, randomPositions(rng(seed), 5, 163840), V3, 2e-6, seed);
  });

  it('leaves position 0 unchanged, bit for bit', async () => {
    const s: RopeSlices = { rows: 2, heads: 2, ropeDim: 32, rowStride: 64, headStride: 32, ropeOffset: 0 };
    const x = randn(rng(testSeed('rope p0')), 128);
    const got = await rotateOnGpu(x, s, new Uint32Array([0, 0]), TINY);
    expect(Array.from(got)).toEqual(Array.from(x));
  });

  it('writes consecutive positions for a prefill chunk', async () => {
    const { device } = await testGpu();
    const buf = uploadBuffer(device, new Uint32Array(5).fill(0xffffffff), 'positions');
    writeConsecutivePositions(device, buf, 130, 4);
    expect(Array.from(await readU32(device, buf, 5))).toEqual([130, 131, 132, 133, 0xffffffff]);
    buf.destroy();
  });

  it('rejects a layout larger than its buffer', async () => {
    const { device } = await testGpu();
    const b = uploadBuffer(device, new Float32Array(64), 'b');
    const args = { rows: 2, heads: 1, ropeDim: 32, rowStride: 40, headStride: 0, ropeOffset: 8, x: b, positions: b, invFreq: b };
    const rope = createRopeYarn(await testKernelContext());
    expect(() => rope.prepare(args)).toThrow(/needs 320/);
    b.destroy();
  });

  it('counts bytes and FLOPs', () => {
    expect(ropeYarnCost({ rows: 2, heads: 3, ropeDim: 4 })).toEqual({ bytes: 16 * 12 + 8 + 8, flops: 34 * 12 });
  });
});
