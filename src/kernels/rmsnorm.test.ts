// RMSNorm on the GPU (SwiftShader here) against the float64 reference, every reduction (one row
// per invocation, a workgroup tree, subgroups), plain and with the fused residual add.
// Bound: ‖out − ref‖/‖ref‖ < 1e-5. The f32 sum of squares is the only error that grows with the
// width: positive terms, rounded to nearest, so its relative error is a random walk of a few
// u·sqrt(n) (u = 2^-24; under 1e-6 at 7168 columns even when one invocation sums them all), halved
// by the inverse square root, plus two roundings per output.

import { describe, expect, it } from 'vitest';
import rmsnormSource from '../../shaders/rmsnorm.wgsl?raw';
import { readF32, uploadBuffer } from '../gpu/buffers.ts';
import type { Gpu } from '../gpu/device.ts';
import type { KernelContext } from '../gpu/kernel.ts';
import { submitPass } from '../gpu/kernel.ts';
import { PipelineCache } from '../gpu/pipeline_cache.ts';
import { composeShader } from '../gpu/shader_compose.ts';
import { randn, relError, rng, testGpu, testKernelContext, testSeed } from '../gpu/testing.ts';
import { createRmsNorm, RMSNORM_REDUCES, rmsNormCost, type RmsNormOptions, type RmsNormReduce, type RowLayout } from './rmsnorm.ts';
import { rmsNormRef } from './rmsnorm.ref.ts';

const TOL = 1e-5;

const hasSubgroups = (await testGpu()).device.features.has('subgroups');
// The subgroup tests say so in their names: skipped (not failed) on a device without it.
const NEEDS_SUBGROUPS = "needs the device's 'subgroups' feature";

interface Case {
  rows: number;
  width: number;
  xLayout?: RowLayout;
  yLayout?: RowLayout;
}

function nanFilled(n: number): Float32Array {
  return new Float32Array(n).fill(Number.NaN);
}

async function runCase(c: Case, options: RmsNormOptions, seed: number): Promise<void> {
  const { device } = await testGpu();
  const addResidual = options.addResidual ?? false;
  const next = rng(seed);
  const xl = c.xLayout ?? { stride: c.width, offset: 0 };
  const yl = c.yLayout ?? { stride: c.width, offset: 0 };
  const xLen = (c.rows - 1) * xl.stride + xl.offset + c.width;
  const yLen = (c.rows - 1) * yl.stride + yl.offset + c.width;
  const x = randn(next, xLen, 3);
  const delta = addResidual ? randn(next, xLen) : undefined;
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
  const kernel = createRmsNorm(await testKernelContext(), options);
  const op = kernel.prepare({
    rows: c.rows, width: c.width, eps, x: xBuf, weight: wBuf, y: yBuf, delta: dBuf, xLayout: xl, yLayout: yl,
  });
  submitPass(device, op);
  expect((await device.popErrorScope())?.message).toBeUndefined();

  const y = await readF32(device, yBuf, yLen);
  const what = `${JSON.stringify(c)} ${JSON.stringify(options)} (workgroup ${kernel.workgroupSize}, WEBMOE_SEED=${seed})`;
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
  if (addResidual) {
    // The residual add is one f32 add on both sides: bit-identical.
    expect(Array.from(await readF32(device, xBuf, xLen)), `${what}: x after the residual add`).toEqual(Array.from(xRef));
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

// The subgroup reduction at odd widths (fewer columns than invocations, a remainder of one, V3's
// hidden size) and row counts, contiguous.
const SUBGROUP_CASES: Case[] = [1, 7, 200, 257, 7168].flatMap((width) => [1, 3, 65].map((rows) => ({ rows, width })));

// Invocations per row for the subgroup reduction: the adapter's default (one subgroup on
// SwiftShader), 1, and sizes that are not a multiple of SwiftShader's 4 lanes (a partial
// subgroup: 6, 100) or many subgroups (32, 256), so the step between subgroups runs with sums
// from several of them and with slots left at zero.
const SUBGROUP_SIZES: (number | undefined)[] = [undefined, 1, 6, 32, 100, 256];

describe('rmsnorm kernel', () => {
  for (const reduce of ['thread', 'workgroup'] as const) {
    for (const addResidual of [false, true]) {
      it(`matches the reference (${addResidual ? 'with residual add, ' : ''}reduce ${reduce})`, async () => {
        const seed = testSeed(`rmsnorm ${reduce} ${addResidual}`);
        for (const [i, c] of CASES.entries()) await runCase(c, { addResidual, reduce }, seed + i);
      });
    }
  }

  for (const addResidual of [false, true]) {
    it.skipIf(!hasSubgroups)(`matches the reference (${addResidual ? 'with residual add, ' : ''}reduce subgroup; ${NEEDS_SUBGROUPS})`, async () => {
      const seed = testSeed(`rmsnorm subgroup ${addResidual}`);
      let i = 0;
      for (const subgroupWorkgroupSize of SUBGROUP_SIZES) {
        const options: RmsNormOptions = { addResidual, reduce: 'subgroup', subgroupWorkgroupSize };
        for (const c of [...SUBGROUP_CASES, ...CASES]) await runCase(c, options, seed + i++);
      }
    });
  }

  it('keeps the older rowPerThread switch, and defaults by adapter', async () => {
    const ctx = await testKernelContext();
    expect(createRmsNorm(ctx, { rowPerThread: true }).reduce).toBe('thread');
    expect(createRmsNorm(ctx, { rowPerThread: false }).reduce).toBe('workgroup');
    expect(createRmsNorm(ctx, { rowPerThread: true, reduce: 'workgroup' }).reduce).toBe('workgroup');
    expect(createRmsNorm(ctx).reduce).toBe(ctx.gpu.adapter.isSoftware ? 'thread' : 'workgroup');
    expect(createRmsNorm(ctx, { reduce: 'thread' }).rowPerThread).toBe(true);
  });

  // Not `workgroup`: 65538 workgroups of 256 invocations take about a minute on SwiftShader (its
  // grid is the subgroup variant's, one workgroup per row).
  for (const reduce of ['thread', 'subgroup'] as const) {
    it.skipIf(reduce === 'subgroup' && !hasSubgroups)(`spreads more rows than one grid dimension holds over two (reduce ${reduce}${reduce === 'subgroup' ? `; ${NEEDS_SUBGROUPS}` : ''})`, async () => {
      // thread: 64 rows per workgroup, so 65535 * 64 rows fit in x; subgroup: one row per workgroup.
      const rows = reduce === 'thread' ? 65535 * 64 + 3 : 65535 + 3;
      await runCase({ rows, width: 1 }, { reduce }, testSeed(`rmsnorm many rows ${reduce}`));
    });
  }

  it("enables subgroups in the subgroup variant's WGSL only (an adapter without them compiles the others)", () => {
    for (const reduce of RMSNORM_REDUCES) {
      const composed = composeShader({ kernel: { name: 'rmsnorm.wgsl', code: rmsnormSource }, axes: { reduce: RMSNORM_REDUCES }, variant: { reduce } });
      const code = composed.replace(/\/\/.*$/gm, ''); // the code, not the comments that name the builtins
      expect(/^enable subgroups;$/m.test(code), reduce).toBe(reduce === 'subgroup');
      expect(/subgroup(Add|Elect)/.test(code), reduce).toBe(reduce === 'subgroup');
    }
  });

  it("refuses the subgroup reduction on a device without 'subgroups'", async () => {
    const gpu = await testGpu();
    // The same device, its feature list emptied: the check comes before any pipeline is made.
    const device = new Proxy(gpu.device, { get: (target, key) => (key === 'features' ? new Set<string>() : Reflect.get(target, key)) });
    const ctx: KernelContext = { gpu: { ...gpu, device } as Gpu, pipelines: new PipelineCache(gpu.device) };
    expect(() => createRmsNorm(ctx, { reduce: 'subgroup' })).toThrow(/'subgroups' feature/);
    expect(createRmsNorm(ctx, { reduce: 'thread' }).reduce).toBe('thread');
  });

  it('rejects bad options, a delta without the fused pipeline and a too-small buffer', async () => {
    const { device } = await testGpu();
    const ctx = await testKernelContext();
    expect(() => createRmsNorm(ctx, { reduce: 'tree' as RmsNormReduce })).toThrow(/not a reduction/);
    expect(() => createRmsNorm(ctx, { reduce: 'workgroup', subgroupWorkgroupSize: 32 })).toThrow(/subgroup reduction only/);
    if (hasSubgroups) {
      for (const size of [0, 2.5, 100000]) expect(() => createRmsNorm(ctx, { reduce: 'subgroup', subgroupWorkgroupSize: size })).toThrow(/subgroupWorkgroupSize/);
    }
    const kernel = createRmsNorm(ctx, { rowPerThread: true });
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
