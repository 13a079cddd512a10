// mla_absorb on the GPU (SwiftShader here) against mla_absorb.ref.ts: random FP8 kv_b_proj with
// distinct block scales on odd shapes (128-row scale blocks starting inside heads, a 128-column
// boundary inside rkv, rows that start inside a u32 word), bf16 and f32 weights, NaN-poisoned
// outputs with a poisoned tail that must stay untouched, a 2-D dispatch, the fixture's kv_b_proj
// against the official code's k_nope and v, and argument errors.
// Bound: ‖out − ref‖/‖ref‖ < 1e-5 (f32 sums of <= 136 products against f64). q_pe is RoPE of q's
// rope part: bit for bit what the standalone rope_yarn kernel makes of it (the unfused path), and
// within 1e-6 of the float64 reference (the bound of rope_yarn.test.ts up to position 4096).

import { beforeAll, describe, expect, it } from 'vitest';
import { readF32, uploadBuffer } from '../gpu/buffers.ts';
import type { Gpu } from '../gpu/device.ts';
import { submitPass, type PreparedCall } from '../gpu/kernel.ts';
import { randn, rng, testGpu, testSeed } from '../gpu/testing.ts';
import { ArgumentError } from '../errors.ts';
import { dequantizeRef, type RefWeight } from './gemm_fp8.ref.ts';
import { createMlaAbsorbQ, createMlaExpandO, mlaAbsorbCost, type AbsorbQArgs, type ExpandOArgs, type MlaAbsorbOptions, type MlaAbsorbShape } from './mla_absorb.ts';
import { absorbQRef, expandORef } from './mla_absorb.ref.ts';
import { createRopeYarn } from './rope_yarn.ts';
import { ropeInvFreq } from './rope_tables.ts';
import type { WeightFormat } from './matmul_operands.ts';
import { expectClose, fp8GemmCases, poisonedOutput, randomWeight, uploadWeight } from '../testing/matmul_testing.ts';
import { PipelineCache } from '../gpu/pipeline_cache.ts';

let gpu: Gpu;
let cache: PipelineCache;
beforeAll(async () => {
  gpu = await testGpu();
  cache = new PipelineCache(gpu.device);
});

/** Both steps of one weight format, as the model uses them around the attention. */
interface MlaAbsorb {
  weights: WeightFormat;
  prepareQ(args: AbsorbQArgs): PreparedCall;
  prepareO(args: ExpandOArgs): PreparedCall;
}
function createMlaAbsorb({ cache: pipelines, ...options }: MlaAbsorbOptions & { cache: PipelineCache }): MlaAbsorb {
  const q = createMlaAbsorbQ({ gpu, pipelines: pipelines }, options);
  const o = createMlaExpandO({ gpu, pipelines: pipelines }, options);
  return { weights: q.weights, prepareQ: (args) => q.prepare(args), prepareO: (args) => o.prepare(args) };
}

/** Elements past each output, poisoned: a write out of range shows there. */
const TAIL = 5;

const kvBRows = (s: MlaAbsorbShape) => s.heads * (s.qkNopeHeadDim + s.vHeadDim);

interface Outputs {
  qLat: Float32Array;
  qPe: Float32Array;
  o: Float32Array;
}

/** Positions and YaRN frequencies of the rows of a call. */
interface Rope {
  positions: Uint32Array;
  invFreq: Float32Array;
}

/** The fixture's YaRN scaling at qk_rope_head_dim dr, and `rows` random positions below 4096 (the first the largest). */
function randomRope(dr: number, rows: number, next: () => number): Rope {
  const invFreq = ropeInvFreq({
    qk_rope_head_dim: dr,
    rope_theta: 10000,
    rope_scaling: { factor: 8, original_max_position_embeddings: 64, beta_fast: 32, beta_slow: 1 },
  });
  const positions = Uint32Array.from({ length: rows }, () => Math.floor(next() * 4096));
  positions[0] = 4095;
  return { positions, invFreq };
}

/** Run prepareQ on q and prepareO on oLat in one pass, into poisoned outputs; free everything. */
async function runAbsorb(absorb: MlaAbsorb, shape: MlaAbsorbShape, weight: RefWeight, q: Float32Array, oLat: Float32Array, rope: Rope): Promise<Outputs> {
  const { device } = gpu;
  const { rows, heads, qkRopeHeadDim: dr, vHeadDim: dv, kvLoraRank: rkv } = shape;
  const { weight: kvB, weight_scale_inv: kvBScale } = uploadWeight(device, weight);
  const counts = { qLat: rows * heads * rkv, qPe: rows * heads * dr, o: rows * heads * dv };
  const out = {
    qLat: poisonedOutput(device, counts.qLat + TAIL, 'qLat'),
    qPe: poisonedOutput(device, counts.qPe + TAIL, 'qPe'),
    o: poisonedOutput(device, counts.o + TAIL, 'o'),
  };
  const inputs = {
    q: uploadBuffer(device, q, 'q'),
    oLat: uploadBuffer(device, oLat, 'oLat'),
    positions: uploadBuffer(device, rope.positions, 'positions'),
    invFreq: uploadBuffer(device, rope.invFreq, 'inv_freq'),
  };
  const calls = [
    absorb.prepareQ({ ...shape, q: inputs.q, kvB, kvBScale, qLat: out.qLat, qPe: out.qPe, positions: inputs.positions, invFreq: inputs.invFreq }),
    absorb.prepareO({ ...shape, oLat: inputs.oLat, kvB, kvBScale, o: out.o }),
  ];
  try {
    submitPass(device, ...calls);
    const result = {} as Outputs;
    for (const name of ['qLat', 'qPe', 'o'] as const) {
      const values = await readF32(device, out[name], counts[name] + TAIL);
      const tail = Array.from(values.subarray(counts[name]));
      expect(tail.every(Number.isNaN), `${name}: written past its ${counts[name]} elements: ${tail}`).toBe(true);
      result[name] = values.subarray(0, counts[name]);
    }
    return result;
  } finally {
    for (const call of calls) call.destroy();
    for (const b of [kvB, kvBScale, ...Object.values(inputs), out.qLat, out.qPe, out.o]) b?.destroy();
  }
}

/** What the unfused path made of q_pe: the rope_yarn kernel on q's rope parts in place, then the copy. */
async function ropeYarnOnQ(shape: MlaAbsorbShape, q: Float32Array, rope: Rope): Promise<Float32Array> {
  const { device } = gpu;
  const { rows, heads, qkNopeHeadDim: dn, qkRopeHeadDim: dr } = shape;
  const buffers = { x: uploadBuffer(device, q, 'q'), positions: uploadBuffer(device, rope.positions, 'positions'), invFreq: uploadBuffer(device, rope.invFreq, 'inv_freq') };
  const call = createRopeYarn({ gpu, pipelines: cache }).prepare({ rows, heads, ropeDim: dr, rowStride: heads * (dn + dr), headStride: dn + dr, ropeOffset: dn, ...buffers });
  try {
    submitPass(device, call);
    const rotated = await readF32(device, buffers.x, q.length);
    const qPe = new Float32Array(rows * heads * dr);
    for (let rh = 0; rh < rows * heads; rh++) qPe.set(rotated.subarray(rh * (dn + dr) + dn, (rh + 1) * (dn + dr)), rh * dr);
    return qPe;
  } finally {
    call.destroy();
    for (const b of Object.values(buffers)) b.destroy();
  }
}

/** Random q and o_lat for `shape`, GPU against reference. */
async function checkRandom(absorb: MlaAbsorb, shape: MlaAbsorbShape, weight: RefWeight, next: () => number): Promise<void> {
  const { rows, heads, qkNopeHeadDim: dn, qkRopeHeadDim: dr, kvLoraRank: rkv } = shape;
  const q = randn(next, rows * heads * (dn + dr));
  const oLat = randn(next, rows * heads * rkv);
  const rope = randomRope(dr, rows, next);
  const kvB = dequantizeRef(weight, kvBRows(shape), rkv);
  const got = await runAbsorb(absorb, shape, weight, q, oLat, rope);
  const want = { ...absorbQRef({ ...shape, kvB, q, ...rope }), o: expandORef({ ...shape, kvB, oLat }) };
  const what = `${weight.format} ${JSON.stringify(shape)}`;
  expectClose(got.qLat, want.qLat, 1e-5, `${what} qLat`);
  expectClose(got.o, want.o, 1e-5, `${what} o`);
  expectClose(got.qPe, want.qPe, 1e-6, `${what} qPe`);
  expect(Array.from(got.qPe), `${what} qPe against rope_yarn`).toEqual(Array.from(await ropeYarnOnQ(shape, q, rope)));
}

const shape = (heads: number, dn: number, dr: number, dv: number, rkv: number, rows = 1): MlaAbsorbShape => ({
  rows,
  heads,
  qkNopeHeadDim: dn,
  qkRopeHeadDim: dr,
  vHeadDim: dv,
  kvLoraRank: rkv,
});

describe('mla_absorb', () => {
  it.each([
    // 96 weight rows: one scale block row
    { what: 'one row block', s: shape(3, 20, 6, 12, 72) },
    // 400 weight rows of 80 per head: row blocks start inside W_UV[1], W_UK[3] and W_UV[4]; rkv crosses a column block
    { what: 'blocks inside heads', s: shape(5, 32, 4, 48, 136) },
    // rkv odd: most weight rows start inside a u32 word; one rope pair per head
    { what: 'odd rkv', s: shape(2, 7, 2, 5, 131) },
  ])('fp8 weights, $what, rows 1, 2, 17', async ({ s }) => {
    const next = rng(testSeed(`mla_absorb fp8 ${JSON.stringify(s)}`));
    const weight = randomWeight('fp8', kvBRows(s), s.kvLoraRank, next);
    expect(new Set(weight.scale).size, 'block scales all differ').toBe(weight.scale!.length);
    const absorb = createMlaAbsorb({ cache });
    expect(absorb.weights).toBe('fp8');
    for (const rows of [1, 2, 17]) await checkRandom(absorb, { ...s, rows }, weight, next);
  });

  it.each<{ weights: WeightFormat; s: MlaAbsorbShape }>([
    { weights: 'bf16', s: shape(2, 7, 2, 5, 131, 3) }, // odd rkv: rows start in the upper half of a word
    { weights: 'bf16', s: shape(5, 32, 4, 48, 136, 2) }, // rkv % 4 == 0: the aligned loads
    { weights: 'f32', s: shape(5, 32, 4, 48, 136, 2) },
  ])('$weights weights', async ({ weights, s }) => {
    const next = rng(testSeed(`mla_absorb ${weights}`));
    await checkRandom(createMlaAbsorb({ cache, weights }), s, randomWeight(weights, kvBRows(s), s.kvLoraRank, next), next);
  });

  it('spreads more workgroups than one dimension allows over two', async () => {
    const s = shape(16, 3, 4, 2, 136, 128);
    // absorb_q: one invocation per quad of q_lat columns and per q_pe pair
    expect(s.rows * s.heads * (Math.ceil(s.kvLoraRank / 4) + s.qkRopeHeadDim / 2)).toBeGreaterThan(gpu.device.limits.maxComputeWorkgroupsPerDimension);
    const next = rng(testSeed('mla_absorb 2D dispatch'));
    const weight = randomWeight('fp8', kvBRows(s), s.kvLoraRank, next);
    await checkRandom(createMlaAbsorb({ cache, workgroupSize: 1 }), s, weight, next);
  });

  it("matches the official code's k_nope and v on the fixture's kv_b_proj", async () => {
    // The fp8_gemm case of kv_b_proj holds c = 5 rows of kv_norm output and the official f32
    // [k_nope | v] = c @ wkv_b^T. Absorbed and naive forms agree: q_lat[r, h] . c[r] =
    // q_nope[r, h] . k_nope[r, h], and o with o_lat[r, h] = c[r] is v[r, h].
    const c = fp8GemmCases().find((k) => k.hf_weight === 'model.layers.0.self_attn.kv_b_proj.weight')!;
    const s = shape(8, 32, 32, 48, 256, c.M); // the fixture's config.json
    const { heads, qkNopeHeadDim: dn, qkRopeHeadDim: dr, vHeadDim: dv, kvLoraRank: rkv } = s;
    expect([c.N, c.K]).toEqual([kvBRows(s), rkv]);
    const next = rng(testSeed('mla_absorb fixture'));
    const q = randn(next, c.M * heads * (dn + dr));
    const oLat = new Float32Array(c.M * heads * rkv);
    for (let r = 0; r < c.M; r++) for (let h = 0; h < heads; h++) oLat.set(c.x.subarray(r * rkv, (r + 1) * rkv), (r * heads + h) * rkv);
    const got = await runAbsorb(createMlaAbsorb({ cache }), s, c.weight, q, oLat, randomRope(dr, c.M, next));

    const scores = { absorbed: [] as number[], official: [] as number[] };
    const v = new Float32Array(c.M * heads * dv);
    for (let r = 0; r < c.M; r++) {
      for (let h = 0; h < heads; h++) {
        const rh = r * heads + h;
        const kv = r * c.N + h * (dn + dv); // [k_nope | v] of (r, h) in y_dequant_f32
        let absorbed = 0;
        for (let k = 0; k < rkv; k++) absorbed += got.qLat[rh * rkv + k] * c.x[r * rkv + k];
        let official = 0;
        for (let d = 0; d < dn; d++) official += q[rh * (dn + dr) + d] * c.y_dequant_f32[kv + d];
        scores.absorbed.push(absorbed);
        scores.official.push(official);
        v.set(c.y_dequant_f32.subarray(kv + dn, kv + dn + dv), rh * dv);
      }
    }
    expectClose(scores.absorbed, scores.official, 1e-5, 'q_lat . c against q_nope . k_nope');
    expectClose(got.o, v, 1e-5, 'o against v');
  });

  it('counts bytes and FLOPs', () => {
    const s = shape(128, 128, 64, 128, 512, 1); // V3, one decode row
    // the products, and RoPE's 34 FLOPs per q_pe pair (ropeYarnCost)
    expect(mlaAbsorbCost({ ...s, step: 'absorb_q', weights: 'fp8' }).flops).toBe(2 * 128 * 128 * 512 + 34 * 128 * 32);
    // W_UV dominates expand_o: 128 heads * 128 * 512 e4m3 bytes
    const bytes = mlaAbsorbCost({ ...s, step: 'expand_o', weights: 'fp8' }).bytes;
    expect(bytes).toBe(4 * 128 * 512 + 128 * 128 * 512 + 4 * 256 * 4 + 4 * 128 * 128);
  });
});

describe('mla_absorb arguments', () => {
  it('refuses what it cannot compute with typed errors', () => {
    const { device } = gpu;
    const buffer = (bytes: number) => device.createBuffer({ size: bytes, usage: GPUBufferUsage.STORAGE });
    const s = shape(3, 20, 6, 12, 72, 2);
    const kvB = buffer(96 * 72); // e4m3 bytes
    const kvBScale = buffer(4);
    const q = buffer(4 * 2 * 3 * 26);
    const qLat = buffer(4 * 2 * 3 * 72);
    const qPe = buffer(4 * 2 * 3 * 6);
    const o = buffer(4 * 2 * 3 * 12);
    const positions = buffer(4 * 2);
    const invFreq = buffer(4 * 3);
    const fp8 = createMlaAbsorb({ cache });
    const ok = { ...s, q, kvB, kvBScale, qLat, qPe, positions, invFreq };
    fp8.prepareQ(ok).destroy();
    expect(() => fp8.prepareQ({ ...ok, kvBScale: undefined })).toThrow(ArgumentError);
    expect(() => fp8.prepareQ({ ...ok, kvBScale: undefined })).toThrow(/kvBScale .*is required for fp8/);
    expect(() => fp8.prepareO({ ...s, oLat: qLat, kvB, o })).toThrow(/kvBScale .*is required for fp8/);
    expect(() => createMlaAbsorb({ cache, weights: 'bf16' }).prepareO({ ...s, oLat: qLat, kvB, kvBScale, o })).toThrow(
      /kvBScale is not used by bf16 weights/,
    );
    expect(() => fp8.prepareQ({ ...ok, rows: 3 })).toThrow(/q holds 624 bytes, rows=3 .* needs 936/);
    expect(() => fp8.prepareQ({ ...ok, qLat: o })).toThrow(/qLat holds 288 bytes/);
    expect(() => fp8.prepareO({ ...s, oLat: qLat, kvB, kvBScale, o: qPe })).toThrow(/o holds 144 bytes/);
    expect(() => fp8.prepareQ({ ...ok, heads: 4, rows: 1 })).toThrow(/kvB holds 6912 bytes, rows=1 heads=4 .* needs 9216/);
    expect(() => fp8.prepareQ({ ...ok, kvBScale: buffer(0) })).toThrow(/kvBScale holds 0 bytes/);
    expect(() => fp8.prepareQ({ ...ok, qkRopeHeadDim: 0 })).toThrow(/qkRopeHeadDim must be a positive integer/);
    expect(() => fp8.prepareQ({ ...ok, qkRopeHeadDim: 5 })).toThrow(/qkRopeHeadDim 5 is odd; RoPE rotates pairs/);
    expect(() => fp8.prepareQ({ ...ok, positions: buffer(4) })).toThrow(/positions holds 4 bytes, .* needs 8/);
    expect(() => fp8.prepareQ({ ...ok, invFreq: buffer(8) })).toThrow(/invFreq holds 8 bytes, .* needs 12/);
    expect(() => fp8.prepareQ({ ...ok, qPe: qLat })).toThrow(/qLat must not share a buffer with another argument/);
    expect(() => createMlaAbsorb({ cache, weights: 'f16' as WeightFormat })).toThrow(/"f16" is not one of fp8, bf16, f32/);
    for (const b of [kvB, kvBScale, q, qLat, qPe, o, positions, invFreq]) b.destroy();
  });
});
