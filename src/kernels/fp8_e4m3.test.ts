// e4m3fn: the CPU reference against an independent derivation, then the WGSL snippet
// (shaders/fp8_e4m3.wgsl) against the reference on every code and on every rounding case.

import { describe, expect, it } from 'vitest';
import fp8Source from '../../shaders/fp8_e4m3.wgsl?raw';
import { readF32, readU32, uploadBuffer, createStorageBuffer } from '../gpu/buffers.ts';
import { createBindGroup, dispatch, kernelPipeline, submitPass } from '../gpu/kernel.ts';
import { randn, rng, testKernelContext, testSeed } from '../gpu/testing.ts';
import { E4M3_VALUES, e4m3ToF32, f32ToE4m3 } from './fp8_e4m3.ref.ts';

/** An independent decode: build the f32 bit pattern (normals) or scale the integer m (subnormals). */
function decodeFromBits(code: number): number {
  const e = (code >> 3) & 15;
  const m = code & 7;
  if (e === 15 && m === 7) return NaN;
  const magnitude = e === 0 ? m / 512 : new Float32Array(new Uint32Array([((e + 120) << 23) | (m << 20)]).buffer)[0];
  return code & 0x80 ? -magnitude : magnitude;
}

/** An independent encode: the nearest of the 127 finite magnitudes, ties to the even code. */
function encodeBySearch(x: number): number {
  let best = 0;
  for (let c = 1; c <= 0x7e; c++) {
    const d = Math.abs(E4M3_VALUES[c] - Math.abs(x)) - Math.abs(E4M3_VALUES[best] - Math.abs(x));
    if (d < 0 || (d === 0 && c % 2 === 0)) best = c;
  }
  return (x < 0 || Object.is(x, -0) ? 0x80 : 0) | best;
}

const FINITE_CODES = Array.from({ length: 256 }, (_, c) => c).filter((c) => (c & 0x7f) !== 0x7f);

/** Inputs that exercise every rounding rule: each value, the midpoints, 1 ulp either side, overflow. */
function roundingCases(): Float32Array {
  const out: number[] = [0, -0, 1e-30, 2 ** -10, 2 ** -10 * 3, 448, 460, 464, 470, 1e6, -1e6];
  const ulp = (v: number, dir: 1 | -1) => {
    const f = new Float32Array([v]);
    const u = new Int32Array(f.buffer);
    u[0] += v === 0 ? (dir > 0 ? 1 : 0) : dir;
    return f[0];
  };
  for (let c = 0; c < 0x7e; c++) {
    const mid = Math.fround((E4M3_VALUES[c] + E4M3_VALUES[c + 1]) / 2); // exact: few significant bits
    for (const s of [1, -1]) out.push(s * E4M3_VALUES[c], s * mid, s * ulp(mid, 1), s * ulp(mid, -1));
  }
  return Float32Array.from(out);
}

describe('e4m3 reference (fp8_e4m3.ref.ts)', () => {
  it('decodes all 256 codes as the bit formula does', () => {
    for (let c = 0; c < 256; c++) {
      const want = decodeFromBits(c);
      if (Number.isNaN(want)) expect(e4m3ToF32(c), `code ${c}`).toBeNaN();
      else expect(Object.is(e4m3ToF32(c), want) || e4m3ToF32(c) === want, `code 0x${c.toString(16)}`).toBe(true);
    }
  });

  it('has the documented edge values', () => {
    expect(Object.is(e4m3ToF32(0x80), -0)).toBe(true);
    expect(e4m3ToF32(0x01)).toBe(2 ** -9);
    expect(e4m3ToF32(0x07)).toBe(7 * 2 ** -9);
    expect(e4m3ToF32(0x08)).toBe(2 ** -6);
    expect(e4m3ToF32(0x38)).toBe(1);
    expect(e4m3ToF32(0x7e)).toBe(448);
    expect(e4m3ToF32(0xfe)).toBe(-448);
    expect(e4m3ToF32(0x7f)).toBeNaN();
    expect(e4m3ToF32(0xff)).toBeNaN();
    // positive codes are strictly increasing
    for (let c = 1; c <= 0x7e; c++) expect(E4M3_VALUES[c]).toBeGreaterThan(E4M3_VALUES[c - 1]);
  });

  it('encode(decode(c)) == c for the 254 finite codes', () => {
    for (const c of FINITE_CODES) expect(f32ToE4m3(E4M3_VALUES[c]), `code 0x${c.toString(16)}`).toBe(c);
  });

  it('rounds to nearest, ties to even, saturates at 448, like a search of the table', () => {
    for (const x of roundingCases()) expect(f32ToE4m3(x), `x = ${x}`).toBe(encodeBySearch(Math.max(-448, Math.min(448, x))));
    expect(f32ToE4m3(NaN)).toBe(0x7f);
    expect(f32ToE4m3(1.0625)).toBe(0x38); // midpoint of 1 and 1.125: even mantissa 0
    expect(f32ToE4m3(1.1875)).toBe(0x3a); // midpoint of 1.125 and 1.25: even mantissa 2
    expect(f32ToE4m3(2 ** -10)).toBe(0x00); // midpoint of 0 and 2^-9
  });

  it('agrees with the search on random values of every magnitude', () => {
    const seed = testSeed('e4m3 encode random');
    const next = rng(seed);
    const xs = randn(next, 4000);
    for (let i = 0; i < xs.length; i++) {
      const x = Math.fround(xs[i] * 2 ** (Math.floor(next() * 30) - 18));
      expect(f32ToE4m3(x), `x = ${x}`).toBe(encodeBySearch(Math.max(-448, Math.min(448, x))));
    }
  });
});

// A test entry point around the snippet: decode every code, encode every rounding case.
const HARNESS = `
@group(0) @binding(0) var<storage, read> inputs: array<f32>;
@group(0) @binding(1) var<storage, read_write> decoded: array<f32>;
@group(0) @binding(2) var<storage, read_write> encoded: array<u32>;
@group(0) @binding(3) var<storage, read_write> decoded_words: array<vec4<f32>>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
  let i = id.x;
  if (i < 256u) {
    decoded[i] = e4m3_to_f32(i);
    // code i in byte 0, (i + 1) % 256 in byte 1, ...: every code in every lane of a packed word
    let codes = (vec4<u32>(i) + vec4<u32>(0u, 1u, 2u, 3u)) % vec4<u32>(256u);
    decoded_words[i] = e4m3x4_to_f32(codes.x | (codes.y << 8u) | (codes.z << 16u) | (codes.w << 24u));
  }
  if (i < arrayLength(&inputs)) {
    encoded[i] = f32_to_e4m3(inputs[i]);
  }
}`;

describe('fp8_e4m3.wgsl on the GPU', () => {
  it('decodes all 256 codes (alone and in each byte of a word) and encodes every rounding case as the reference does', async () => {
    const ctx = await testKernelContext();
    const { device } = ctx.gpu;
    const pipeline = kernelPipeline(ctx.pipelines, {
      kernel: 'fp8_e4m3_harness',
      source: HARNESS,
      snippets: [{ name: 'fp8_e4m3.wgsl', code: fp8Source }],
      bindings: ['read-only-storage', 'storage', 'storage', 'storage'],
    });
    const seed = testSeed('e4m3 wgsl');
    const random = randn(rng(seed), 4096).map((v, i) => v * 2 ** ((i % 28) - 18));
    const inputs = Float32Array.from([...roundingCases(), ...random]);
    const inputBuffer = uploadBuffer(device, inputs, 'inputs');
    const decodedBuffer = createStorageBuffer(device, 256 * 4, 'decoded');
    const encodedBuffer = createStorageBuffer(device, inputs.length * 4, 'encoded');
    const wordsBuffer = createStorageBuffer(device, 256 * 16, 'decoded_words');
    const bindGroup = createBindGroup(device, 'fp8_e4m3_harness', pipeline, [inputBuffer, decodedBuffer, encodedBuffer, wordsBuffer]);
    submitPass(device, dispatch(device, pipeline, bindGroup, Math.ceil(Math.max(256, inputs.length) / 64)));

    const decoded = await readF32(device, decodedBuffer, 256);
    for (let c = 0; c < 256; c++) {
      if (Number.isNaN(E4M3_VALUES[c])) expect(decoded[c], `code 0x${c.toString(16)}`).toBeNaN();
      else expect(Object.is(decoded[c], E4M3_VALUES[c]), `code 0x${c.toString(16)}: ${decoded[c]}`).toBe(true);
    }
    const words = await readF32(device, wordsBuffer, 256 * 4);
    for (let i = 0; i < 256; i++) {
      for (let lane = 0; lane < 4; lane++) {
        const c = (i + lane) % 256;
        const got = words[4 * i + lane];
        if (Number.isNaN(E4M3_VALUES[c])) expect(got, `code 0x${c.toString(16)} in byte ${lane}`).toBeNaN();
        else expect(Object.is(got, E4M3_VALUES[c]), `code 0x${c.toString(16)} in byte ${lane}: ${got}`).toBe(true);
      }
    }
    const encoded = await readU32(device, encodedBuffer, inputs.length);
    for (let i = 0; i < inputs.length; i++) expect(encoded[i], `x = ${inputs[i]}`).toBe(f32ToE4m3(inputs[i]));
    for (const b of [inputBuffer, decodedBuffer, encodedBuffer, wordsBuffer]) b.destroy();
  });
});
