// Block-scaled FP8 quantisation of a Linear weight on the GPU, for the loader of releases that
// store Linears in BF16 / F16 / F32 (weights 'fp8', src/model/load_weights.ts): one call turns a
// band of whole 128-row blocks into e4m3 codes and their 128x128 block scales, in place in the
// buffers the FP8 kernels read. Shader: shaders/quantize_fp8.wgsl; reference: quantize_fp8.ref.ts.

import fp8Source from '../../shaders/fp8_e4m3.wgsl?raw';
import halfFloatSource from '../../shaders/half_float.wgsl?raw';
import quantizeSource from '../../shaders/quantize_fp8.wgsl?raw';
import { ArgumentError } from '../errors.ts';
import { BLOCK, checkBindings, checkCounts, checkU32Indices, kernelPipeline, singleDispatch, Uniforms, type BufferResource, type Cost, type Kernel, type KernelContext } from '../gpu/kernel.ts';

/** The storage of the source weight: as the release holds it. */
export const QUANTIZE_SOURCE_DTYPES = ['bf16', 'f16', 'f32'] as const;
export type QuantizeSourceDtype = (typeof QUANTIZE_SOURCE_DTYPES)[number];

export const SOURCE_ELEMENT_BYTES: Readonly<Record<QuantizeSourceDtype, number>> = { bf16: 2, f16: 2, f32: 4 };

export interface QuantizeFp8Options {
  /** Default bf16. */
  dtype?: QuantizeSourceDtype;
}

export interface QuantizeFp8Args {
  /** Rows of W [rows, cols] (the whole tensor). */
  rows: number;
  cols: number;
  /** The band: W's rows firstRow .. firstRow + bandRows - 1; firstRow is a multiple of 128. */
  firstRow: number;
  bandRows: number;
  /** The band [bandRows, cols] in `dtype`, little-endian. */
  source: BufferResource;
  /** Receives W's codes [rows, cols] e4m3 bytes from word `codeWord`; must be zero there before the first band. */
  codes: BufferResource;
  codeWord?: number;
  /** Receives W's scales [ceil(rows/128), ceil(cols/128)] f32 from element `scaleBase`. */
  scales: BufferResource;
  scaleBase?: number;
  label?: string;
}

/** Bytes read (the band) and written (its codes and scales); a few operations per element. */
export function quantizeFp8Cost({ bandRows, cols, dtype }: { bandRows: number; cols: number; dtype: QuantizeSourceDtype }): Cost {
  const elements = bandRows * cols;
  return { bytes: elements * (SOURCE_ELEMENT_BYTES[dtype] + 1) + 4 * Math.ceil(bandRows / BLOCK) * Math.ceil(cols / BLOCK), flops: 2 * elements };
}

export interface QuantizeFp8 extends Kernel<QuantizeFp8Args> {
  readonly dtype: QuantizeSourceDtype;
}

export function createQuantizeFp8(ctx: KernelContext, options: QuantizeFp8Options = {}): QuantizeFp8 {
  const { device } = ctx.gpu;
  const dtype = options.dtype ?? 'bf16';
  if (!QUANTIZE_SOURCE_DTYPES.includes(dtype)) throw new ArgumentError(`quantize_fp8: dtype "${dtype}" is not one of ${QUANTIZE_SOURCE_DTYPES.join(', ')}`);
  const pipeline = kernelPipeline(ctx.pipelines, {
    kernel: 'quantize_fp8',
    source: quantizeSource,
    snippets: [
      { name: 'fp8_e4m3.wgsl', code: fp8Source },
      { name: 'half_float.wgsl', code: halfFloatSource },
    ],
    axes: { dtype: QUANTIZE_SOURCE_DTYPES },
    variant: { dtype },
    bindings: ['uniform', 'read-only-storage', 'storage', 'storage'],
  });

  return {
    name: 'quantize_fp8',
    dtype,
    prepare(args) {
      const { rows, cols, firstRow, bandRows, codeWord = 0, scaleBase = 0, label = 'quantize_fp8' } = args;
      checkCounts(label, { rows, cols, bandRows });
      checkCounts(label, { firstRow, codeWord, scaleBase }, 0);
      if (firstRow % BLOCK !== 0 || firstRow + bandRows > rows) {
        throw new ArgumentError(`${label}: the band starts at row ${firstRow} with ${bandRows} rows; it must start on a ${BLOCK}-row block and end by row ${rows}`);
      }
      const colBlocks = Math.ceil(cols / BLOCK);
      const scaleCount = Math.ceil(rows / BLOCK) * colBlocks;
      checkU32Indices(label, { 'rows * cols': rows * cols, 'code word': codeWord + Math.ceil((rows * cols) / 4), scales: scaleBase + scaleCount });
      checkBindings(
        device,
        label,
        {
          source: [args.source, bandRows * cols * SOURCE_ELEMENT_BYTES[dtype]],
          codes: [args.codes, 4 * codeWord + rows * cols],
          scales: [args.scales, 4 * (scaleBase + scaleCount)],
        },
        `rows=${rows} cols=${cols} band ${firstRow}+${bandRows} (${dtype})`,
      );
      const uniforms = new Uniforms(device, label, ['u32', 'u32', 'u32', 'u32', 'u32', 'u32']);
      uniforms.write([bandRows, cols, firstRow, colBlocks, codeWord, scaleBase]);
      return singleDispatch({
        device,
        label,
        pipeline,
        uniforms,
        bindings: [args.source, args.codes, args.scales],
        workgroups: [colBlocks, Math.ceil(bandRows / BLOCK), 1],
        cost: quantizeFp8Cost({ bandRows, cols, dtype }),
      });
    },
  };
}
