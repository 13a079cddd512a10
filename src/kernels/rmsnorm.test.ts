// RMSNorm on the GPU (SwiftShader here) against the float64 reference, both variants
// (workgroup reduction, one row per invocation), plain and with the fused residual add.
// Bound: f32 accumulation of width <= 300 squares and two roundings per output stay far
// below ‖out − ref‖/‖ref‖ < 1e-5.

import { describe, expect, it } from 'vitest';
import { readF32, uploadBuffer } from '../gpu/buffers.ts';
import { randn, relError, rng, testGpu, testKernelContext, testSeed } from '../gpu/testing.ts';
import { createRmsNorm, rmsNormCost, type RowLayout } from './rmsnorm.ts';
import { rmsNormRef } from './rmsnorm.ref.ts';
import { submitPass } from '../gpu/kernel.ts';

const TOL = 1e-5;

interface Case {
  rows: number;
  width: number;
  xLayout?: RowLayout;
  yLayout?: RowLayout;
}

function nanFilled(n: number): Float32Array {
  return new Float32Array(n).fill(Number.NaN);
}

async function runCase(c: Case, variant: { addResidual: boolean; isSoftware: boolean }, seed: number): Promise<void> {
  const { device } = await testGpu();
  const next = rng(seed);
  const xl = c.xLayout ?? { stride: c.width, offset: 0 };
  const yl = c.yLayout ?? { stride: c.width, offset: 0 };
  const xLen = (c.rows - 1) * xl.stride + xl.offset + c.width;
  const yLen = (c.rows - 1) * yl.stride + yl.offset + c.width;
  const x = randn(next, xLen, 3);
  const delta = variant.addResidual ? randn(next, xLen) : undefined;
  const weight = randn(next, c.width, 0.1).map((v) => 1 + v);
  const eps = 1e-6;

  // NaN everywhere in y: any element the kernel should write and does not, or writes outside
  // its rows, shows up.
  const yRef = nanFilled(yLen);
  const xRef = x.slice();
  rmsNormRef({ rows: c.rows, width: c.width, eps, x: xRef, weight, y: yRef, xLayout: xl, yLayout: yl, delta });

  const xBuf = uploadBuffer(device, x, 'x');
  const wBuf = uploadBuffer(device, weight, 'weight');
  const yBuf = uploadBuffer(device, nanFilled(yLen), 'y');
  const dBuf = delta ? uploadBuffer(device, delta, 'delta') : undefined;
  device.pushErrorScope('validation');
  const kernel = createRmsNorm(await testKernelContext(), { addResidual: variant.addResidual, rowPerThread: variant.isSoftware });
  const op = kernel.prepare({
    rows: c.rows, width: c.width, eps, x: xBuf, weight: wBuf, y: yBuf, delta: dBuf, xLayout: xl, yLayout: yl,
  });
  submitPass(device, op);
  expect((await device.popErrorScope())?.message).toBeUndefined();

  const y = await readF32(device, yBuf, yLen);
  const what = `${JSON.stringify(c)} ${JSON.stringify(variant)}`;
  // Compare written rows; elements between rows must still be NaN.
  const got: number[] = [];
  const want: number[] = [];
  for (let i = 0; i < yLen; i++) {
    if (Number.isNaN(yRef[i])) expect(Number.isNaN(y[i]), `${what}: y[${i}] written outside the rows`).toBe(true);
    else {
      got.push(y[i]);
      want.push(yRef[i]);
    }
  }
  const err = relError(got, want);
  expect(err.rel, `${what}: worst at ${err.worst}: got ${got[err.worst]} want ${want[err.worst]}`).toBeLessThan(TOL);
  if (variant.addResidual) {
    // The residual add is one f32 add on both sides: bit-identical.
    expect(Array.from(await readF32(device, xBuf, xLen))).toEqual(Array.from(xRef));
  }
  for (const b of [xBuf, wBuf, yBuf, dBuf]) b?.destroy();
  op.destroy();
}

const CASES: Case[] = [
  { rows: 1, width: 7 },
  { rows: 5, width: 129 },
  { rows: 33, width: 300 },
  { rows: 3, width: 1 },
  // kv_a_layernorm: normalise the first 24 of each [24 + 8] row, into a [3 + 24 + 5]-strided output
  { rows: 7, width: 24, xLayout: { stride: 32, offset: 0 }, yLayout: { stride: 32, offset: 3 } },
  // an offset input row slice
  { rows: 9, width: 17, xLayout: { stride: 40, offset: 11 } },
];

describe('rmsnorm kernel', () => {
  for (const isSoftware of [false, true]) {
    for (const addResidual of [false, true]) {
      const name = `${addResidual ? 'with residual add, ' : ''}${isSoftware ? 'row per invocation' : 'workgroup per row'}`;
      it(`matches the reference (${name})`, async () => {
        const seed = testSeed(`rmsnorm ${isSoftware} ${addResidual}`);
        for (const [i, c] of CASES.entries()) await runCase(c, { addResidual, isSoftware }, seed + i);
      });
    }
  }

  it('spreads more rows than one grid dimension holds over two (row per invocation)', async () => {
    // 64 rows per workgroup: 65535 * 64 rows fit in x; this checks the flattening with more.
    const rows = 65535 * 64 + 3;
    const c: Case = { rows, width: 1 };
    await runCase(c, { addResidual: false, isSoftware: true }, testSeed('rmsnorm many rows'));
  });

  it('rejects a delta without the fused pipeline and a too-small buffer', async () => {
    const { device } = await testGpu();
    const kernel = createRmsNorm(await testKernelContext(), { rowPerThread: true });
    const b = uploadBuffer(device, new Float32Array(8), 'b');
    expect(() => kernel.prepare({ rows: 2, width: 4, eps: 1e-6, x: b, weight: b, y: b, delta: b })).toThrow(/delta/);
    expect(() => kernel.prepare({ rows: 3, width: 4, eps: 1e-6, x: b, weight: b, y: b })).toThrow(/needs 48/);
    b.destroy();
  });

  it('counts bytes and FLOPs', () => {
    expect(rmsNormCost({ rows: 2, width: 10 })).toEqual({ bytes: 4 * (40 + 10), flops: 80 });
    expect(rmsNormCost({ rows: 2, width: 10, addResidual: true })).toEqual({ bytes: 4 * (80 + 10), flops: 100 });
  });
});
