// preparePair (q_a_proj or q_proj with kv_a_proj_with_mqa): one GEMV dispatch when both Linears are
// whole and of one format, else the calls of two prepare()s; either way each y bit for bit as two
// separate prepare() calls give it. Dispatches are counted by recording into a counting pass.

import { beforeAll, describe, expect, it } from 'vitest';
import { readF32, uploadBuffer } from '../gpu/buffers.ts';
import { submitPass, type KernelContext, type PreparedCall } from '../gpu/kernel.ts';
import { randn, rng, testKernelContext, testSeed } from '../gpu/testing.ts';
import type { WeightFormat } from '../kernels/matmul_operands.ts';
import { poisonedOutput, randomWeight, uploadWeight, weightRows } from '../testing/matmul_testing.ts';
import type { LinearWeight } from './gpu_weights.ts';
import { createLinearKernels } from './linear.ts';

const K = 204; // not a multiple of 128 (the paired GEMV needs K % 4 == 0)
const [NA, NB] = [257, 39]; // the first one split at 128 rows in the split cases

let ctx: KernelContext;
beforeAll(async () => {
  ctx = await testKernelContext();
});

/** Dispatches `call` records. */
function dispatches(call: PreparedCall): number {
  let count = 0;
  const pass = { setPipeline() {}, setBindGroup() {}, dispatchWorkgroups: () => void count++ } as unknown as GPUComputePassEncoder;
  call.encode(pass);
  return count;
}

/** A LinearWeight of `format` [N, K] on the GPU, whole or in row bands of `band` rows. */
function linear(name: string, format: WeightFormat, N: number, next: () => number, band = N, K = 204): { weight: LinearWeight; buffers: GPUBuffer[] } {
  const ref = randomWeight(format, N, K, next);
  const buffers: GPUBuffer[] = [];
  const pieces = [];
  for (let first = 0; first < N; first += band) {
    const rows = Math.min(band, N - first);
    const w = uploadWeight(ctx.gpu.device, weightRows(ref, N, K, first, rows));
    buffers.push(w.weight, ...(w.weight_scale_inv ? [w.weight_scale_inv] : []));
    pieces.push({ firstRow: first, rows, ...w });
  }
  return { weight: { name, format, pieces, out: N, in: K }, buffers };
}

describe('linear preparePair', () => {
  it.each([
    { what: 'both whole, fp8', formats: ['fp8', 'fp8'], bandA: NA, M: 1, K, fused: true },
    { what: 'both whole, bf16, 3 rows', formats: ['bf16', 'bf16'], bandA: NA, M: 3, K, fused: true },
    { what: 'the first split into 128-row bands', formats: ['fp8', 'fp8'], bandA: 128, M: 2, K, fused: false },
    { what: 'two formats', formats: ['fp8', 'bf16'], bandA: NA, M: 1, K, fused: false },
    { what: 'K % 4 != 0', formats: ['f32', 'f32'], bandA: NA, M: 1, K: 203, fused: false },
    { what: 'a prefill chunk (GEMM)', formats: ['fp8', 'fp8'], bandA: NA, M: 7, K, fused: false },
  ] as const)('$what: fused $fused, each y as two prepare() calls give it', async ({ formats, bandA, M, K, fused }) => {
    const { device } = ctx.gpu;
    const next = rng(testSeed(`linear pair ${formats} ${bandA} ${M}`));
    const kernels = createLinearKernels(ctx);
    const a = linear('q_a_proj', formats[0], NA, next, bandA, K);
    const b = linear('kv_a_proj_with_mqa', formats[1], NB, next, NB, K);
    const x = uploadBuffer(device, randn(next, M * K), 'x');
    const ys = [NA, NB, NA, NB].map((n) => poisonedOutput(device, M * n));
    const pair = kernels.preparePair(a.weight, b.weight, { M, x, y: ys[0], ySecond: ys[1] });
    const separate = [kernels.prepare(a.weight, { M, x, y: ys[2] }), kernels.prepare(b.weight, { M, x, y: ys[3] })];
    expect(dispatches(pair)).toBe(fused ? 1 : separate.reduce((n, c) => n + dispatches(c), 0));
    submitPass(device, pair, ...separate);
    const [ya, yb, wantA, wantB] = await Promise.all(ys.map((y) => readF32(device, y)));
    expect(new Uint32Array(ya.buffer)).toEqual(new Uint32Array(wantA.buffer));
    expect(new Uint32Array(yb.buffer)).toEqual(new Uint32Array(wantB.buffer));
    expect(ya.some(Number.isNaN) || yb.some(Number.isNaN)).toBe(false);
    for (const c of [pair, ...separate]) c.destroy();
    for (const buffer of [...a.buffers, ...b.buffers, x, ...ys]) buffer.destroy();
  });

  it('runs two calls where the adapter binds too few storage buffers for one', async () => {
    // the same device, reporting a lower limit
    const limits = new Proxy(ctx.gpu.device.limits, {
      get: (l, key) => (key === 'maxStorageBuffersPerShaderStage' ? 6 : l[key as keyof GPUSupportedLimits]),
    });
    const device = new Proxy(ctx.gpu.device, {
      get(d, key) {
        if (key === 'limits') return limits;
        const value = Reflect.get(d, key);
        return typeof value === 'function' ? value.bind(d) : value;
      },
    });
    const kernels = createLinearKernels({ ...ctx, gpu: { ...ctx.gpu, device } });
    const next = rng(testSeed('linear pair few bindings'));
    const [a, b] = [linear('q_a_proj', 'fp8', NA, next), linear('kv_a_proj_with_mqa', 'fp8', NB, next)];
    const x = uploadBuffer(ctx.gpu.device, randn(next, K), 'x');
    const ys = [NA, NB].map((n) => poisonedOutput(ctx.gpu.device, n));
    const pair = kernels.preparePair(a.weight, b.weight, { M: 1, x, y: ys[0], ySecond: ys[1] });
    expect(dispatches(pair)).toBe(2);
    pair.destroy();
    for (const buffer of [...a.buffers, ...b.buffers, x, ...ys]) buffer.destroy();
  });
});
