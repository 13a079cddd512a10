// RMSNorm kernel wrapper: pipeline, bind group, params, dispatch, bytes/FLOPs. Shader:
// shaders/rmsnorm.wgsl; reference: rmsnorm.ref.ts. Used for attn_norm, q_a_layernorm,
// kv_a_layernorm (the first kv_lora_rank values of each kv_a_proj_with_mqa row, via xLayout),
// post_attention_layernorm (fused with the residual add) and the final norm.

import shaderSource from '../../shaders/rmsnorm.wgsl?raw';
import { ArgumentError, GpuLimitError } from '../errors.ts';
import { checkBindings, checkCounts, kernelPipeline, singleDispatch, Uniforms, type Cost, type Kernel, type KernelContext, type PreparedCall } from '../gpu/kernel.ts';
import type { RowLayout } from './rmsnorm.ref.ts';

export type { RowLayout } from './rmsnorm.ref.ts';

/**
 * How a row's sum of squares is reduced (shaders/rmsnorm.wgsl):
 *   thread     one invocation per row, no barrier (CPU adapters, where a barrier is very expensive)
 *   workgroup  one workgroup per row, a tree reduction in workgroup memory (GPUs)
 *   subgroup   one workgroup per row, subgroupAdd within each subgroup and one workgroup step
 *              between them; needs 'subgroups'
 */
export type RmsNormReduce = 'thread' | 'workgroup' | 'subgroup';
export const RMSNORM_REDUCES: readonly RmsNormReduce[] = ['thread', 'workgroup', 'subgroup'];
const RMSNORM_AXES = { reduce: RMSNORM_REDUCES };

export interface RmsNormOptions {
  /** Fuse the residual add: x = x + delta (x updated in place), then y = RMSNorm(x). Default false. */
  addResidual?: boolean;
  /**
   * The reduction. Default: `thread` on software adapters (isSoftware), else `workgroup`; the
   * measured choice for an adapter is chooseRmsNormReduce's (variant_choice.ts).
   */
  reduce?: RmsNormReduce;
  /** The older switch: true is reduce `thread`, false `workgroup`. `reduce` wins when both are given. */
  rowPerThread?: boolean;
  /**
   * `subgroup` only: invocations per row, any count the adapter allows in a workgroup. Default: the
   * adapter's smallest subgroup size on software adapters (one subgroup per row: 4 lanes on
   * SwiftShader, the fastest there; 4 where the size is not reported), else 256.
   */
  subgroupWorkgroupSize?: number;
}

const WG_PER_ROW = 256; // GPUs: invocations sharing one row
const WG_ROWS = 64; // CPU adapters: rows per workgroup
const WG_SOFTWARE_SUBGROUP = 4; // CPU adapters that do not report their subgroup size: SwiftShader's

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

/** The adapter's smallest subgroup size, where the browser reports it (GPUAdapterInfo.subgroupMinSize). */
export function subgroupMinSize(device: GPUDevice): number | undefined {
  const info = (device as { adapterInfo?: GPUAdapterInfo }).adapterInfo;
  const size = info?.subgroupMinSize;
  return typeof size === 'number' && size > 0 ? size : undefined;
}

export function createRmsNorm(ctx: KernelContext, options: RmsNormOptions = {}): RmsNorm {
  const { device } = ctx.gpu;
  const addResidual = options.addResidual ?? false;
  const reduce: RmsNormReduce =
    options.reduce ?? (options.rowPerThread === undefined ? (ctx.gpu.adapter.isSoftware ? 'thread' : 'workgroup') : options.rowPerThread ? 'thread' : 'workgroup');
  if (!RMSNORM_REDUCES.includes(reduce)) throw new ArgumentError(`rmsnorm: "${String(reduce)}" is not a reduction; use one of ${RMSNORM_REDUCES.join(', ')}`);
  let workgroupSize = reduce === 'thread' ? WG_ROWS : WG_PER_ROW;
  if (reduce === 'subgroup') {
    if (!device.features.has('subgroups')) throw new GpuLimitError("rmsnorm: the subgroup reduction needs the 'subgroups' feature, which this device lacks");
    workgroupSize = options.subgroupWorkgroupSize ?? (ctx.gpu.adapter.isSoftware ? (subgroupMinSize(device) ?? WG_SOFTWARE_SUBGROUP) : WG_PER_ROW);
    const max = Math.min(device.limits.maxComputeWorkgroupSizeX, device.limits.maxComputeInvocationsPerWorkgroup);
    if (!Number.isInteger(workgroupSize) || workgroupSize < 1 || workgroupSize > max) {
      throw new ArgumentError(`rmsnorm: subgroupWorkgroupSize must be an integer in 1 .. ${max}, got ${workgroupSize}`);
    }
  } else if (options.subgroupWorkgroupSize !== undefined) {
    throw new ArgumentError('rmsnorm: subgroupWorkgroupSize is for the subgroup reduction only');
  }
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
