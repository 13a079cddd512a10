// RMSNorm kernel wrapper: pipeline, bind group, params, dispatch, bytes/FLOPs. Shader:
// shaders/rmsnorm.wgsl; reference: rmsnorm.ref.ts. Used for attn_norm, q_a_layernorm,
// kv_a_layernorm (the first kv_lora_rank values of each kv_a_proj_with_mqa row, via xLayout),
// post_attention_layernorm (fused with the residual add) and the final norm.

import shaderSource from '../../shaders/rmsnorm.wgsl?raw';
import { ArgumentError } from '../errors.ts';
import { RMSNORM_REDUCES, resolveNormReduce, type NormReduceOptions, type RmsNormReduce } from './norm_reduce.ts';
import { checkBindings, checkCounts, kernelPipeline, singleDispatch, Uniforms, type Cost, type Kernel, type KernelContext, type PreparedCall } from '../gpu/kernel.ts';
import type { RowLayout } from './rmsnorm.ref.ts';

export type { RowLayout } from './rmsnorm.ref.ts';

// How a row's sum of squares is reduced (shaders/rmsnorm.wgsl): norm_reduce.ts.
export { RMSNORM_REDUCES, subgroupMinSize, type RmsNormReduce } from './norm_reduce.ts';
const RMSNORM_AXES = { reduce: RMSNORM_REDUCES };

export interface RmsNormOptions extends NormReduceOptions {
  /** Fuse the residual add: x = x + delta (x updated in place), then y = RMSNorm(x). Default false. */
  addResidual?: boolean;
}


export interface RmsNorm extends Kernel<RmsNormArgs, PreparedRmsNorm> {
  readonly addResidual: boolean;
  readonly reduce: RmsNormReduce;
  /** reduce === 'thread'. */
  readonly rowPerThread: boolean;
  /** Invocations per workgroup: rows per workgroup for `thread`, invocations per row otherwise. */
  readonly workgroupSize: number;
}

export interface RmsNormShape {
  rows: number;
  width: number;
  addResidual?: boolean;
}

/**
 * Bytes moved and FLOPs for the benchmark: x read (and with the residual: delta read, x
 * written), weight read once, y written; 4 FLOPs per element (square, add, two multiplies),
 * one more for the residual add.
 */
export function rmsNormCost({ rows, width, addResidual = false }: RmsNormShape): Cost {
  const n = rows * width;
  return {
    bytes: 4 * (n * (addResidual ? 4 : 2) + width),
    flops: n * (addResidual ? 5 : 4),
  };
}

export interface RmsNormArgs {
  rows: number;
  width: number;
  /** rms_norm_eps of the config. */
  eps: number;
  /** [rows, xLayout.stride] f32: the rows to normalise; with addResidual, the residual stream h. */
  x: GPUBuffer;
  /** [width] f32 norm weight. */
  weight: GPUBuffer;
  /** [rows, yLayout.stride] f32 output. Must not be x. */
  y: GPUBuffer;
  /** addResidual only: [rows, xLayout.stride] f32, added into x. */
  delta?: GPUBuffer;
  /** Default: contiguous rows of `width`. */
  xLayout?: RowLayout;
  yLayout?: RowLayout;
  label?: string;
}

export interface PreparedRmsNorm extends PreparedCall {
  /** Moves the output rows (y's layout offset) for the next submit, e.g. to a new cache position. */
  setYOffset(offset: number): void;
}

export function createRmsNorm(ctx: KernelContext, options: RmsNormOptions = {}): RmsNorm {
  const { device } = ctx.gpu;
  const addResidual = options.addResidual ?? false;
  const { reduce, workgroupSize } = resolveNormReduce(ctx, 'rmsnorm', options);
  const pipeline = kernelPipeline(ctx.pipelines, {
    kernel: 'rmsnorm',
    source: shaderSource,
    entryPoint: addResidual ? 'add_rmsnorm' : 'rmsnorm',
    axes: RMSNORM_AXES,
    variant: { reduce },
    constants: { WG: workgroupSize },
    bindings: ['uniform', 'storage', 'read-only-storage', 'storage', addResidual ? 'read-only-storage' : undefined],
  });
  const rowPerThread = reduce === 'thread';

  return {
    name: 'rmsnorm',
    addResidual,
    reduce,
    rowPerThread,
    workgroupSize,
    prepare(args) {
      const { rows, width } = args;
      const label = args.label ?? 'rmsnorm';
      const xl = args.xLayout ?? { stride: width, offset: 0 };
      const yl = args.yLayout ?? { stride: width, offset: 0 };
      checkCounts(label, { width });
      checkCounts(label, { rows }, 0);
      if (addResidual !== (args.delta !== undefined)) {
        throw new ArgumentError(`${label}: delta must be given exactly when the kernel fuses the residual add`);
      }
      checkRowLayout(label, 'x', rows, width, xl);
      checkRowLayout(label, 'y', rows, width, yl);
      checkBindings(device, label, {
        x: [args.x, rowBytes(rows, width, xl)],
        y: [args.y, rowBytes(rows, width, yl)],
        weight: [args.weight, 4 * width],
        ...(args.delta ? { delta: [args.delta, rowBytes(rows, width, xl)] as const } : {}),
      });

      const uniforms = new Uniforms(device, label, ['u32', 'u32', 'u32', 'u32', 'u32', 'u32', 'f32']);
      const writeParams = (yOffset: number) => uniforms.write([rows, width, xl.stride, xl.offset, yl.stride, yOffset, args.eps]);
      writeParams(yl.offset);
      const call = singleDispatch({
        device,
        label,
        pipeline,
        uniforms,
        bindings: [args.x, args.weight, args.y, args.delta],
        workgroups: rowPerThread ? Math.ceil(rows / workgroupSize) : rows,
        cost: rmsNormCost({ rows, width, addResidual }),
      });
      return {
        ...call,
        setYOffset(offset) {
          checkBindings(device, label, { y: [args.y, rowBytes(rows, width, { stride: yl.stride, offset })] });
          writeParams(offset);
        },
      };
    },
  };
}

function checkRowLayout(label: string, name: string, rows: number, width: number, layout: RowLayout): void {
  if (layout.stride < width && rows > 1) throw new ArgumentError(`${label}: ${name} rows overlap (stride ${layout.stride} < width ${width})`);
}

/** Bytes the rows of a layout reach. */
function rowBytes(rows: number, width: number, layout: RowLayout): number {
  return rows === 0 ? 0 : 4 * ((rows - 1) * layout.stride + layout.offset + width);
}
