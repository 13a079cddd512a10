// quantize_fp8 on the GPU (SwiftShader here) against quantizeFp8 (quantize_fp8.ref.ts), bit for
// bit: codes and scales, every source dtype, shapes with partial edge blocks (rows 300, odd cols,
// cols < 4), bands of one and several blocks, codes and scales written at offsets inside larger
// buffers (the stacked experts' slots), an all-zero block, and exact ties at block scale 1.

import { beforeAll, describe, expect, it } from 'vitest';
import { readBuffer, readF32, uploadBuffer } from '../gpu/buffers.ts';
import { BLOCK, submitPass, type KernelContext } from '../gpu/kernel.ts';
import { randn, rng, testKernelContext, testSeed } from '../gpu/testing.ts';
import { ArgumentError } from '../errors.ts';
import { decodeF16 } from './float_decode.ref.ts';
import { createQuantizeFp8, QUANTIZE_SOURCE_DTYPES, SOURCE_ELEMENT_BYTES, type QuantizeSourceDtype } from './quantize_fp8.ts';
import { quantizeFp8 } from './quantize_fp8.ref.ts';

let ctx: KernelContext;
beforeAll(async () => {
  ctx = await testKernelContext();
});

/** W [rows, cols] as source bytes of `dtype` and the float32 values those bytes hold. */
function randomSource(dtype: QuantizeSourceDtype, rows: number, cols: number, next: () => number): { bytes: Uint8Array; values: Float32Array } {
  const n = rows * cols;
  if (dtype === 'f16') {
    // Random finite halves: every exponent, subnormals and zeros of both signs.
    const bits = Uint16Array.from({ length: n }, () => {
      const b = Math.floor(next() * 0x10000);
      return (b & 0x7c00) === 0x7c00 ? b & 0x83ff : b;
    });
    const bytes = new Uint8Array(bits.buffer);
    return { bytes, values: decodeF16(bytes) };
  }
  // Gaussian blocks, each scaled by its own power of two (2^-30 .. 2^12), then stored.
  const values = randn(next, n, 1);
  const blockScale = new Map<number, number>();
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const key = Math.floor(r / BLOCK) * 1000 + Math.floor(c / BLOCK);
      if (!blockScale.has(key)) blockScale.set(key, 2 ** Math.floor(next() * 43 - 30));
      values[r * cols + c] *= blockScale.get(key)!;
    }
  }
  if (dtype === 'bf16') {
    const f32 = new Uint32Array(values.buffer);
    const half = Uint16Array.from(f32, (b) => b >>> 16);
    for (let i = 0; i < n; i++) f32[i] = half[i] << 16; // the values the bf16 bytes hold
    return { bytes: new Uint8Array(half.buffer), values };
  }
  return { bytes: new Uint8Array(values.buffer.slice(0)), values };
}

/** Block (0, 0) with amax exactly 448 (so S = 1) and e4m3 ties: 1.0625 -> 1, 1.1875 -> 1.25, 0.5 * 2^-9 -> 0. */
function placeTies(values: Float32Array, cols: number): number[] {
  const ties = [448, 1.0625, 1.1875, -1.0625, 2 ** -10, 3 * 2 ** -10, 464 / 2, 17];
  const placed = ties.slice(0, Math.min(cols, ties.length));
  for (let r = 0; r < Math.min(BLOCK, values.length / cols); r++) {
    for (let c = 0; c < Math.min(BLOCK, cols); c++) values[r * cols + c] = Math.max(-400, Math.min(400, values[r * cols + c]));
  }
  values.set(placed, 0);
  return placed;
}

function toBytes(dtype: QuantizeSourceDtype, values: Float32Array): Uint8Array {
  if (dtype === 'f32') return new Uint8Array(values.buffer.slice(0));
  if (dtype === 'bf16') return new Uint8Array(Uint16Array.from(new Uint32Array(values.buffer.slice(0)), (b) => b >>> 16).buffer);
  throw new Error('f16 test data is made as bits');
}

interface Layout {
  /** Bands as row counts, the last one possibly partial; every band but the last whole blocks. */
  bandRows: number;
  /** Words before W's codes, elements before its scales (a slot of a stacked buffer). */
  codeWord: number;
  scaleBase: number;
}

async function quantizeOnGpu(dtype: QuantizeSourceDtype, bytes: Uint8Array, rows: number, cols: number, layout: Layout) {
  const { device } = ctx.gpu;
  const kernel = createQuantizeFp8(ctx, { dtype });
  const colBlocks = Math.ceil(cols / BLOCK);
  const scaleCount = Math.ceil(rows / BLOCK) * colBlocks;
  const codeBytes = 4 * layout.codeWord + rows * cols;
  const codes = device.createBuffer({ size: Math.ceil((codeBytes + 8) / 4) * 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
  const scales = device.createBuffer({ size: 4 * (layout.scaleBase + scaleCount + 2), usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
  const rowBytes = cols * SOURCE_ELEMENT_BYTES[dtype];
  const made: { destroy(): void }[] = [codes, scales];
  try {
    for (let firstRow = 0; firstRow < rows; firstRow += layout.bandRows) {
      const bandRows = Math.min(layout.bandRows, rows - firstRow);
      const source = uploadBuffer(device, bytes.subarray(firstRow * rowBytes, (firstRow + bandRows) * rowBytes), 'band');
      made.push(source);
      const call = kernel.prepare({ rows, cols, firstRow, bandRows, source, codes, codeWord: layout.codeWord, scales, scaleBase: layout.scaleBase });
      made.push(call);
      submitPass(device, call);
    }
    const allCodes = new Uint8Array(await readBuffer(device, codes));
    const allScales = await readF32(device, scales);
    return {
      codes: allCodes.subarray(4 * layout.codeWord, codeBytes),
      before: allCodes.subarray(0, 4 * layout.codeWord),
      after: allCodes.subarray(codeBytes),
      scales: allScales.subarray(layout.scaleBase, layout.scaleBase + scaleCount),
      outside: [...allScales.subarray(0, layout.scaleBase), ...allScales.subarray(layout.scaleBase + scaleCount)],
    };
  } finally {
    for (const m of made) m.destroy();
  }
}

function firstDifference(a: ArrayLike<number>, b: ArrayLike<number>): number {
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) return i;
  return a.length === b.length ? -1 : Math.min(a.length, b.length);
}

describe('quantize_fp8', () => {
  const shapes: [number, number, Layout][] = [
    [300, 201, { bandRows: 128, codeWord: 0, scaleBase: 0 }],
    [300, 201, { bandRows: 256, codeWord: 7, scaleBase: 5 }],
    [129, 3, { bandRows: 384, codeWord: 1, scaleBase: 1 }],
    [64, 130, { bandRows: 128, codeWord: 0, scaleBase: 0 }],
    [300, 200, { bandRows: 128, codeWord: 3, scaleBase: 2 }],
    [256, 384, { bandRows: 256, codeWord: 0, scaleBase: 0 }],
  ];
  for (const dtype of QUANTIZE_SOURCE_DTYPES) {
    for (const [rows, cols, layout] of shapes) {
      it(`${dtype} [${rows}, ${cols}], bands of ${layout.bandRows} rows, at word ${layout.codeWord}: codes and scales match the reference bit for bit`, async () => {
        const next = rng(testSeed(`quantize_fp8 ${dtype} ${rows}x${cols}`));
        let { bytes, values } = randomSource(dtype, rows, cols, next);
        if (dtype !== 'f16') {
          placeTies(values, cols);
          // an all-zero block (block row 0, the last block column) where there is more than one
          if (cols > BLOCK) for (let r = 0; r < Math.min(BLOCK, rows); r++) values.fill(0, r * cols + BLOCK, r * cols + cols);
          bytes = toBytes(dtype, values);
        }
        const want = quantizeFp8(values, rows, cols);
        const got = await quantizeOnGpu(dtype, bytes, rows, cols, layout);
        expect(firstDifference(got.scales, want.scaleInv)).toBe(-1);
        expect(firstDifference(got.codes, want.codes)).toBe(-1);
        // nothing written outside the tensor's slot
        expect(got.before.every((b) => b === 0) && got.after.every((b) => b === 0)).toBe(true);
        expect(got.outside.every((s) => s === 0)).toBe(true);
        if (dtype !== 'f16') {
          expect(Array.from(got.codes.subarray(0, Math.min(cols, 4)))).toEqual([0x7e, 0x38, 0x3a, 0xb8].slice(0, Math.min(cols, 4)));
          if (cols > BLOCK) expect(got.scales[1]).toBe(1);
        }
      });
    }
  }

  it('refuses a band that does not start on a block or runs past the tensor', () => {
    const kernel = createQuantizeFp8(ctx);
    const b = ctx.gpu.device.createBuffer({ size: 1 << 16, usage: GPUBufferUsage.STORAGE });
    try {
      const args = { rows: 300, cols: 8, bandRows: 128, source: b, codes: b, scales: b };
      expect(() => kernel.prepare({ ...args, firstRow: 64 })).toThrow(ArgumentError);
      expect(() => kernel.prepare({ ...args, firstRow: 256 })).toThrow(/end by row 300/);
      expect(() => createQuantizeFp8(ctx, { dtype: 'f8' as QuantizeSourceDtype })).toThrow(ArgumentError);
    } finally {
      b.destroy();
    }
  });
});
