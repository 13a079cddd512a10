// gemv_fp8 on the GPU (SwiftShader here) against matmulRef: every variant, M = 1 .. 4, shapes whose
// N and K are multiples of neither 4 nor 128, outputs poisoned with NaN, and the official
// fp8_gemm cases of the dsv3-tiny-official fixture. subgroup_per_row runs where the device has
// 'subgroups' (skipped, saying so, elsewhere), also with workgroups that are not a multiple of the
// subgroup size (a partial subgroup splits K over the lanes it has), and its WGSL alone enables them.
// Bounds: ‖y − ref‖/‖ref‖ < 1e-5 for f32 accumulation against the f64 reference; w8a8 against the
// official fp8_gemm (same products, another summation order) < 2e-6. The two-Linears variant
// (q_a_proj + kv_a_proj_with_mqa in one dispatch) must give each Linear's single-call y bit for bit.

import { beforeAll, describe, expect, it } from 'vitest';
import type { Gpu } from '../gpu/device.ts';
import { rng, randn, testGpu, testSeed } from '../gpu/testing.ts';
import { ArgumentError, GpuLimitError } from '../errors.ts';
import { readF32, uploadBuffer } from '../gpu/buffers.ts';
import { submitPass } from '../gpu/kernel.ts';
import { actQuantRef } from './act_quant.ref.ts';
import { E4M3_VALUES } from './fp8_e4m3.ref.ts';
import { matmulRef, type RefActivations } from './gemm_fp8.ref.ts';
import { createGemv, GEMV_KERNEL, GEMV_STRATEGIES, type Gemv, type GemvOptions, type GemvStrategy } from './gemv_fp8.ts';
import gemvSource from '../../shaders/gemv_fp8.wgsl?raw';
import { composeShader } from '../gpu/shader_compose.ts';
import type { KernelContext } from '../gpu/kernel.ts';
import { matmulAxes, matmulSnippets, type MatmulNumerics, type WeightFormat } from './matmul_operands.ts';
import { expectClose, fp8GemmCases, poisonedOutput, randomWeight, runMatmul, runMatmulBands, uploadWeight } from '../testing/matmul_testing.ts';
import { PipelineCache } from '../gpu/pipeline_cache.ts';

const OPERANDS: { weights: WeightFormat; numerics: MatmulNumerics }[] = [
  { weights: 'fp8', numerics: 'weight_only' },
  { weights: 'fp8', numerics: 'w8a8' },
  { weights: 'bf16', numerics: 'weight_only' },
  { weights: 'f32', numerics: 'weight_only' },
];

// K % 4 = 0, 3, 2, 1; N % 4 = 2, 1, 3, 2 (never a multiple of 4 or 128). w8a8 needs K % 128 == 0.
const SHAPES = { weight_only: [[150, 200], [129, 203], [39, 130], [6, 5]], w8a8: [[150, 256], [129, 128]] } as const;

const hasSubgroups = (await testGpu()).device.features.has('subgroups');
const NEEDS_SUBGROUPS = "needs the device's 'subgroups' feature";
const runsHere = (strategy: GemvStrategy) => strategy !== 'subgroup_per_row' || hasSubgroups;

let gpu: Gpu;
let cache: PipelineCache;
beforeAll(async () => {
  gpu = await testGpu();
  cache = new PipelineCache(gpu.device);
});

const gemv = (options: GemvOptions): Gemv => createGemv({ gpu, pipelines: cache }, options);

function activations(numerics: MatmulNumerics, x: Float32Array, M: number, K: number): RefActivations {
  return numerics === 'w8a8' ? { numerics, ...actQuantRef(x, M, K) } : { numerics, x };
}

// Without the device's 'subgroups', subgroup_per_row's cases show as skipped with the reason.
describe.each(GEMV_STRATEGIES.map((strategy) => ({ strategy, skip: !runsHere(strategy) })))('gemv_fp8 $strategy', ({ strategy, skip }) => {
  describe.skipIf(skip)(skip ? NEEDS_SUBGROUPS : 'on this device', () => {
    it.each(OPERANDS)('$weights weights, $numerics: M = 1..4 on odd shapes', async ({ weights, numerics }) => {
      const seed = testSeed(`gemv ${strategy} ${weights} ${numerics}`);
      const next = rng(seed);
      const kernel = gemv({ weights, numerics, strategy });
      for (const [N, K] of SHAPES[numerics]) {
        const weight = randomWeight(weights, N, K, next);
        for (let M = 1; M <= 4; M++) {
          const args = { M, N, K, weight, activations: activations(numerics, randn(next, M * K), M, K) };
          expectClose(await runMatmul(gpu.device, kernel, args), matmulRef(args), 1e-5, `M=${M} N=${N} K=${K}`);
        }
      }
    });

    it.each(OPERANDS)('$weights weights, $numerics: row bands of W, each writing its columns of one y, give the whole W\'s y bit for bit', async ({ weights, numerics }) => {
      const next = rng(testSeed(`gemv bands ${strategy} ${weights} ${numerics}`));
      const kernel = gemv({ weights, numerics, strategy });
      const [N, K] = SHAPES[numerics][0];
      const weight = randomWeight(weights, N, K, next);
      for (const M of [1, 3]) {
        const args = { M, N, K, weight, activations: activations(numerics, randn(next, M * K), M, K) };
        const whole = await runMatmul(gpu.device, kernel, args);
        for (const bandRows of weights === 'fp8' ? [128] : [128, 7]) {
          const banded = await runMatmulBands(gpu.device, kernel, args, bandRows);
          expect(new Uint32Array(banded.buffer), `M=${M} N=${N} bands of ${bandRows}`).toEqual(new Uint32Array(whole.buffer));
        }
      }
    });

    it.each(OPERANDS)('$weights weights, $numerics: two Linears in one dispatch give each single call\'s y bit for bit', async ({ weights, numerics }) => {
      const seed = testSeed(`gemv two ${strategy} ${weights} ${numerics}`);
      const next = rng(seed);
      const device = gpu.device;
      // N of each Linear odd, K not a multiple of 128 (the variant takes K % 4 == 0 only); with 8
      // invocations a workgroup, several workgroups per Linear and one shared by both (subgroup_per_row:
      // a subgroup holding rows of both; bit for bit where all subgroups have as many lanes, see
      // GemvOptions.workgroupSize, so partial subgroups are tested against the reference below)
      const [Na, Nb, K] = numerics === 'w8a8' ? [150, 129, 256] : [129, 39, 204];
      const wa = randomWeight(weights, Na, K, next);
      const wb = randomWeight(weights, Nb, K, next);
      for (const workgroupSize of [64, 8]) {
        const one = gemv({ weights, numerics, strategy, workgroupSize });
        const two = gemv({ weights, numerics, strategy, workgroupSize, linears: 'two' });
        for (const M of [1, 2, 3, 4]) {
          const a = activations(numerics, randn(next, M * K), M, K);
          const x = uploadBuffer(device, a.numerics === 'w8a8' ? a.codes : a.x, 'x');
          const x_scale = a.numerics === 'w8a8' ? uploadBuffer(device, a.scales, 'x_scale') : undefined;
          const [ua, ub] = [uploadWeight(device, wa), uploadWeight(device, wb)];
          // y_b with a row stride and a column offset, as a row band of a split Linear writes
          const layoutB = { yStride: Nb + 5, yCol: 3 };
          const ys = [Na, layoutB.yStride, Na, layoutB.yStride].map((width) => poisonedOutput(device, M * width));
          const second = { N: Nb, ...layoutB, ...ub };
          const calls = [
            one.prepare({ M, N: Na, K, x, x_scale, ...ua, y: ys[0] }),
            one.prepare({ M, N: Nb, K, x, x_scale, ...layoutB, ...ub, y: ys[1] }),
            two.prepare({ M, N: Na, K, x, x_scale, ...ua, y: ys[2], second: { ...second, y: ys[3] } }),
          ];
          submitPass(device, ...calls);
          const [ya, yb, fusedA, fusedB] = await Promise.all(ys.map((y) => readF32(device, y)));
          const what = `seed ${seed} wg ${workgroupSize} M=${M}`;
          expect(new Uint32Array(fusedA.buffer), `${what}: first Linear`).toEqual(new Uint32Array(ya.buffer));
          expect(new Uint32Array(fusedB.buffer), `${what}: second Linear`).toEqual(new Uint32Array(yb.buffer));
          // and the single calls are right (NaN where y_b has no column: untouched)
          expectClose(ya, matmulRef({ M, N: Na, K, weight: wa, activations: a }), 1e-5, `${what}: first vs reference`);
          expect(Number.isNaN(fusedB[0]) && Number.isNaN(fusedB[layoutB.yStride - 1]), `${what}: y_b outside its columns`).toBe(true);
          for (const b of [x, x_scale, ua.weight, ua.weight_scale_inv, ub.weight, ub.weight_scale_inv, ...ys]) b?.destroy();
          for (const c of calls) c.destroy();
        }
      }
    });

    it('decodes every finite e4m3 code exactly, on rows that start inside a word', async () => {
      // Row n holds code c_n at column n % 5 and +0 elsewhere; x = 1 and power-of-two scales make
      // y[n] = e4m3(c_n) * S exact. K = 5 puts most rows off a 4-byte boundary.
      const codes = Array.from({ length: 256 }, (_, c) => c).filter((c) => (c & 0x7f) !== 0x7f);
      const N = codes.length;
      const K = 5;
      const bytes = new Uint8Array(N * K);
      codes.forEach((c, n) => (bytes[n * K + (n % K)] = c));
      const scale = Float32Array.from([2 ** -3, 2 ** 4]); // [ceil(254/128), 1]
      const args = { M: 1, N, K, weight: { format: 'fp8' as const, bytes, scale }, activations: { numerics: 'weight_only' as const, x: new Float32Array(K).fill(1) } };
      const y = await runMatmul(gpu.device, gemv({ strategy }), args);
      codes.forEach((c, n) => {
        const want = E4M3_VALUES[c] * scale[n >> 7];
        expect(y[n] === want, `code 0x${c.toString(16)}: got ${y[n]}, want ${want}`).toBe(true); // -0 sums to +0
      });
    });

    it('reproduces the official fp8_gemm cases (w8a8) and the f32 dequantised Linear (weight_only)', async () => {
      const fp8 = gemv({ strategy, numerics: 'w8a8' });
      const f32 = gemv({ strategy, numerics: 'weight_only' });
      for (const c of fp8GemmCases()) {
        // the fixture has M = 5 rows: w8a8 on rows 0..3, weight_only on row 4
        const rows = <T extends Float32Array | Uint8Array>(a: T, first: number, M: number, width: number) =>
          a.subarray(first * width, (first + M) * width) as T;
        const kb = c.K / 128;
        const w8a8 = { numerics: 'w8a8' as const, codes: rows(c.codes, 0, 4, c.K), scales: rows(c.scales, 0, 4, kb) };
        const yFp8 = await runMatmul(gpu.device, fp8, { M: 4, N: c.N, K: c.K, weight: c.weight, activations: w8a8 });
        expectClose(yFp8, rows(c.y_fp8, 0, 4, c.N), 2e-6, `${c.hf_weight} w8a8 rows 0..3`);
        const weightOnly = { numerics: 'weight_only' as const, x: rows(c.x, 4, 1, c.K) };
        const yF32 = await runMatmul(gpu.device, f32, { M: 1, N: c.N, K: c.K, weight: c.weight, activations: weightOnly });
        expectClose(yF32, rows(c.y_dequant_f32, 4, 1, c.N), 1e-5, `${c.hf_weight} weight_only row 4`);
      }
    });
  });
});

describe('gemv_fp8 subgroup_per_row', () => {
  // Workgroups of 1 (a subgroup of one lane), 6 and 100 (a partial subgroup after full ones for
  // subgroup sizes 4, 8, 16, 32, 64), 64 (the default) and 256 (several subgroups of any size).
  it.skipIf(!hasSubgroups)(`matches the reference for any workgroup size, full subgroups or not (${NEEDS_SUBGROUPS})`, async () => {
    const seed = testSeed('gemv subgroup workgroup sizes');
    const next = rng(seed);
    for (const { weights, numerics } of OPERANDS) {
      const [N, K] = SHAPES[numerics][1];
      const weight = randomWeight(weights, N, K, next);
      for (const workgroupSize of [1, 6, 100, 64, 256]) {
        const kernel = gemv({ weights, numerics, strategy: 'subgroup_per_row', workgroupSize });
        for (const M of [1, 4]) {
          const args = { M, N, K, weight, activations: activations(numerics, randn(next, M * K), M, K) };
          expectClose(await runMatmul(gpu.device, kernel, args), matmulRef(args), 1e-5, `seed ${seed} ${weights} ${numerics} wg ${workgroupSize} M=${M}`);
        }
      }
    }
  });

  it.skipIf(!hasSubgroups)(`two Linears in one dispatch match the reference for any workgroup size (${NEEDS_SUBGROUPS})`, async () => {
    const seed = testSeed('gemv subgroup two Linears');
    const next = rng(seed);
    const device = gpu.device;
    for (const { weights, numerics } of OPERANDS) {
      // the boundary between the Linears inside a subgroup for sizes up to 8 (Na odd)
      const [Na, Nb, K] = numerics === 'w8a8' ? [129, 150, 256] : [129, 39, 204];
      const [wa, wb] = [randomWeight(weights, Na, K, next), randomWeight(weights, Nb, K, next)];
      for (const workgroupSize of [1, 6, 100]) {
        const two = gemv({ weights, numerics, strategy: 'subgroup_per_row', workgroupSize, linears: 'two' });
        for (const M of [1, 3]) {
          const a = activations(numerics, randn(next, M * K), M, K);
          const x = uploadBuffer(device, a.numerics === 'w8a8' ? a.codes : a.x, 'x');
          const x_scale = a.numerics === 'w8a8' ? uploadBuffer(device, a.scales, 'x_scale') : undefined;
          const [ua, ub] = [uploadWeight(device, wa), uploadWeight(device, wb)];
          const [ya, yb] = [poisonedOutput(device, M * Na), poisonedOutput(device, M * Nb)];
          const call = two.prepare({ M, N: Na, K, x, x_scale, ...ua, y: ya, second: { N: Nb, ...ub, y: yb } });
          submitPass(device, call);
          const what = `seed ${seed} ${weights} ${numerics} wg ${workgroupSize} M=${M}`;
          expectClose(await readF32(device, ya), matmulRef({ M, N: Na, K, weight: wa, activations: a }), 1e-5, `${what}: first`);
          expectClose(await readF32(device, yb), matmulRef({ M, N: Nb, K, weight: wb, activations: a }), 1e-5, `${what}: second`);
          for (const b of [x, x_scale, ua.weight, ua.weight_scale_inv, ub.weight, ub.weight_scale_inv, ya, yb]) b?.destroy();
          call.destroy();
        }
      }
    }
  });

  it("enables subgroups in the subgroup_per_row WGSL only (an adapter without them compiles the others)", () => {
    for (const strategy of GEMV_STRATEGIES) {
      for (const linears of ['one', 'two']) {
        const variant = { weights: 'fp8', numerics: 'w8a8', strategy, linears, prologue: 'none' };
        const composed = composeShader({ kernel: { name: 'gemv_fp8.wgsl', code: gemvSource }, snippets: matmulSnippets(GEMV_KERNEL), axes: matmulAxes(GEMV_KERNEL), variant });
        const code = composed.replace(/\/\/.*$/gm, ''); // the code, not the comments that name the builtins
        const subgroup = strategy === 'subgroup_per_row';
        // a directive before any declaration
        expect(code.trimStart().startsWith('enable subgroups;'), `${strategy} ${linears}`).toBe(subgroup);
        expect(/^enable subgroups;$/m.test(code), `${strategy} ${linears}`).toBe(subgroup);
        expect(/subgroup(Add|Shuffle|ExclusiveAdd)|subgroup_size/.test(code), `${strategy} ${linears}`).toBe(subgroup);
      }
    }
  });

  it("refuses subgroup_per_row on a device without 'subgroups', and workgroups over the device's limit", () => {
    // The same device, its feature list emptied: the check comes before any pipeline is made.
    const device = new Proxy(gpu.device, { get: (target, key) => (key === 'features' ? new Set<string>() : Reflect.get(target, key)) });
    const ctx: KernelContext = { gpu: { ...gpu, device } as Gpu, pipelines: cache };
    expect(() => createGemv(ctx, { strategy: 'subgroup_per_row' })).toThrow(GpuLimitError);
    expect(() => createGemv(ctx, { strategy: 'subgroup_per_row' })).toThrow(/subgroup_per_row strategy needs the 'subgroups' feature/);
    expect(createGemv(ctx, { strategy: 'thread_per_4_rows' }).variant.strategy).toBe('thread_per_4_rows');
    const max = Math.min(gpu.device.limits.maxComputeWorkgroupSizeX, gpu.device.limits.maxComputeInvocationsPerWorkgroup);
    expect(() => gemv({ strategy: 'thread_per_4_rows', workgroupSize: max + 1 })).toThrow(new RegExp(`workgroupSize ${max + 1} must be an integer in 1 .. ${max}`));
    expect(() => gemv({ strategy: 'tiled' as GemvStrategy })).toThrow(/"tiled" is not a strategy/);
    if (hasSubgroups) {
      for (const size of [0, 2.5, max + 1]) expect(() => gemv({ strategy: 'subgroup_per_row', workgroupSize: size }), `${size}`).toThrow(ArgumentError);
    }
  });
});

describe('gemv_fp8 dispatch', () => {
  it('spreads more workgroups than one dimension allows over two (lm_head has N = 129280 rows)', async () => {
    // one invocation (4 columns) per workgroup makes N / 4 workgroups, past maxComputeWorkgroupsPerDimension
    const N = 4 * (gpu.device.limits.maxComputeWorkgroupsPerDimension + 100);
    const K = 3;
    const seed = testSeed('gemv 2D dispatch');
    const next = rng(seed);
    const args = { M: 2, N, K, weight: randomWeight('bf16', N, K, next), activations: { numerics: 'weight_only' as const, x: randn(next, 2 * K) } };
    const y = await runMatmul(gpu.device, gemv({ weights: 'bf16', strategy: 'thread_per_4_rows', workgroupSize: 1 }), args);
    expectClose(y, matmulRef(args), 1e-5, `N=${N}`);
  });

  it.skipIf(!hasSubgroups)(`spreads them over two for subgroup_per_row too (one column per invocation; ${NEEDS_SUBGROUPS})`, async () => {
    const N = gpu.device.limits.maxComputeWorkgroupsPerDimension + 100;
    const K = 3;
    const next = rng(testSeed('gemv 2D dispatch subgroup'));
    const args = { M: 2, N, K, weight: randomWeight('bf16', N, K, next), activations: { numerics: 'weight_only' as const, x: randn(next, 2 * K) } };
    const y = await runMatmul(gpu.device, gemv({ weights: 'bf16', strategy: 'subgroup_per_row', workgroupSize: 1 }), args);
    expectClose(y, matmulRef(args), 1e-5, `N=${N}`);
  });
});

describe('gemv_fp8 arguments', () => {
  it('refuses what it cannot compute with typed errors', async () => {
    const device = gpu.device;
    const buffer = (bytes: number) => device.createBuffer({ size: bytes, usage: GPUBufferUsage.STORAGE });
    const [x, weight, scale, y] = [buffer(4 * 5 * 256), buffer(300 * 256), buffer(3 * 2 * 4), buffer(4 * 5 * 300)];
    const ok = { N: 300, K: 256, x, weight, weight_scale_inv: scale, y };
    expect(() => gemv({ weights: 'bf16', numerics: 'w8a8' })).toThrow(/w8a8 quantises activations for FP8 weights only/);
    expect(() => gemv({ strategy: 'workgroup_per_row', workgroupSize: 96 })).toThrow(/power of two/);
    if (hasSubgroups) expect(gemv({ strategy: 'subgroup_per_row', workgroupSize: 96 }).workgroupSize).toBe(96);
    const fp8 = gemv({ strategy: 'thread_per_4_rows' });
    expect(() => fp8.prepare({ ...ok, M: 5 })).toThrow(/at most 4; use gemm_fp8/);
    expect(() => fp8.prepare({ ...ok, M: 1, weight_scale_inv: undefined })).toThrow(/weight_scale_inv is required/);
    expect(() => fp8.prepare({ ...ok, M: 1, N: 301 })).toThrow(/weight holds 76800 bytes, M=1 N=301 K=256 needs 77056/);
    expect(() => fp8.prepare({ ...ok, M: 0 })).toThrow(ArgumentError);
    expect(() => fp8.prepare({ ...ok, M: 1, N: 128, yStride: 300, yCol: 200 })).toThrow(/yCol 200 \+ N 128 must lie within yStride 300/);
    expect(() => fp8.prepare({ ...ok, M: 2, N: 128, yStride: 1300, yCol: 1172 })).toThrow(/y holds 6000 bytes/);
    const w8a8 = gemv({ strategy: 'thread_per_4_rows', numerics: 'w8a8' });
    expect(() => w8a8.prepare({ ...ok, M: 1, K: 200, x_scale: scale })).toThrow(/K to be a multiple of 128 .* got K=200/);
    expect(() => w8a8.prepare({ ...ok, M: 1 })).toThrow(/x_scale is required/);
    expect(() => gemv({ weights: 'f32' }).prepare({ ...ok, M: 1 })).toThrow(/weight_scale_inv is not used by f32 weights/);
    const two = gemv({ strategy: 'thread_per_4_rows', linears: 'two' });
    const second = { N: 128, weight, weight_scale_inv: scale, y };
    expect(() => two.prepare({ ...ok, M: 1 })).toThrow(/second Linear is given exactly to the linears 'two' variant/);
    expect(() => fp8.prepare({ ...ok, M: 1, second })).toThrow(/second Linear is given exactly/);
    expect(() => two.prepare({ ...ok, M: 1, second: { ...second, weight_scale_inv: undefined } })).toThrow(/second Linear\): weight_scale_inv is required/);
    expect(() => two.prepare({ ...ok, M: 1, second: { ...second, N: 301 } })).toThrow(/second Linear\): weight holds 76800 bytes/);
    expect(() => two.prepare({ ...ok, M: 1, K: 255, second })).toThrow(/two Linears in one call need K % 4 == 0, got K=255/);
    const limits = new Proxy(device.limits, { get: (l, key) => (key === 'maxStorageBuffersPerShaderStage' ? 6 : l[key as keyof GPUSupportedLimits]) });
    const few = { ...gpu, device: new Proxy(device, { get: (d, key) => (key === 'limits' ? limits : Reflect.get(d, key)) }) };
    const twoOnFew = createGemv({ gpu: few, pipelines: cache }, { strategy: 'thread_per_4_rows', linears: 'two' });
    expect(() => twoOnFew.prepare({ ...ok, M: 1, second })).toThrow(GpuLimitError);
    expect(() => twoOnFew.prepare({ ...ok, M: 1, second })).toThrow(/7 storage buffers, over this GPU's maxStorageBuffersPerShaderStage \(6\)/);
    for (const b of [x, weight, scale, y]) b.destroy();
  });
});
