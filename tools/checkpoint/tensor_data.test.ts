import { describe, expect, it } from 'vitest';
import { rng, randn } from '../../src/gpu/testing.ts';
import { f32ToE4m3 } from '../../src/kernels/fp8_e4m3.ref.ts';
import { quantizeFp8 } from '../../src/kernels/quantize_fp8.ref.ts';
import { fp8Quantize } from './tensor_data.ts';

describe('fp8Quantize', () => {
  it('encodes as f32ToE4m3 every sign, exponent and kept mantissa, with ties and their neighbours', () => {
    // Rows of 127 values and one 448, so the block scale is exactly 1 and the codes are f32ToE4m3(v).
    // Below the 3 kept mantissa bits: 0x80000 is the tie, 0x7ffff and 0x80001 its neighbours.
    const low = [0, 1, 0x7ffff, 0x80000, 0x80001, 0xfffff, 0x12345, 0xedcba];
    const values: number[] = [];
    const f = new Float32Array(1);
    const bits = new Uint32Array(f.buffer);
    for (let hi = 0; hi < 0x1000; hi++) {
      for (const lo of low) {
        bits[0] = ((hi << 20) | lo) >>> 0; // sign, exponent, the 3 kept mantissa bits; lo: the 20 rounded away
        if (Math.abs(f[0]) <= 448) values.push(f[0]);
      }
    }
    const rows = Math.ceil(values.length / 127);
    const w = new Float32Array(rows * 128);
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < 127; c++) w[r * 128 + c] = values[r * 127 + c] ?? 0;
      w[r * 128 + 127] = 448;
    }
    const { codes, scaleInv } = fp8Quantize(w, rows, 128);
    expect(scaleInv.every((s) => s === 1)).toBe(true);
    let mismatches = 0;
    let first = '';
    for (let i = 0; i < w.length; i++) {
      const want = f32ToE4m3(w[i]);
      if (codes[i] === want) continue;
      if (mismatches++ === 0) first = `${w[i]}: ${codes[i]} vs f32ToE4m3 ${want}`;
    }
    expect(mismatches, first).toBe(0);
  });

  it('gives quantizeFp8 bit for bit on odd shapes, tiny and zero blocks included', () => {
    const seed = 11;
    const w = randn(rng(seed), 300 * 517, 0.05);
    for (let i = 0; i < w.length; i += 97) w[i] *= 1e-5;
    for (let r = 128; r < 256; r++) for (let c = 0; c < 128; c++) w[r * 517 + c] = 0; // a zero block: scale 1, codes 0
    for (let r = 0; r < 3; r++) for (let c = 384; c < 517; c++) w[r * 517 + c] = -(2 ** -130); // a block under the smallest normal
    const want = quantizeFp8(w, 300, 517);
    const got = fp8Quantize(w, 300, 517);
    expect(Buffer.from(got.codes).equals(Buffer.from(want.codes)), `seed ${seed}`).toBe(true);
    expect([...got.scaleInv]).toEqual([...want.scaleInv]);
  });
});
