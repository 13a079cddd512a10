// How the norm kernels (rmsnorm.ts, mla_latent_norm.ts) reduce a row's sum of squares, and the
// workgroup each reduction takes: one resolution for both, so their rows sum alike.
//   thread     one invocation per row, no barrier (CPU adapters, where a barrier is very expensive)
//   workgroup  one workgroup per row, a tree reduction in workgroup memory (GPUs)
//   subgroup   one workgroup per row, subgroupAdd within each subgroup and one workgroup step
//              between them; needs 'subgroups'

import { ArgumentError, GpuLimitError } from '../errors.ts';
import type { KernelContext } from '../gpu/kernel.ts';

export type RmsNormReduce = 'thread' | 'workgroup' | 'subgroup';
export const RMSNORM_REDUCES: readonly RmsNormReduce[] = ['thread', 'workgroup', 'subgroup'];

const WG_PER_ROW = 256; // GPUs: invocations sharing one row
const WG_ROWS = 64; // CPU adapters: rows per workgroup
const WG_SOFTWARE_SUBGROUP = 4; // CPU adapters that do not report their subgroup size: SwiftShader's

export interface NormReduceOptions {
  /** Default: `thread` on software adapters (isSoftware), else `workgroup`. */
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

/** The adapter's smallest subgroup size, where the browser reports it (GPUAdapterInfo.subgroupMinSize). */
export function subgroupMinSize(device: GPUDevice): number | undefined {
  const size = (device as { adapterInfo?: GPUAdapterInfo }).adapterInfo?.subgroupMinSize;
  return typeof size === 'number' && size > 0 ? size : undefined;
}

/** The reduction and workgroup size of a norm kernel named `kernel` (typed errors for bad options or a missing feature). */
export function resolveNormReduce(ctx: KernelContext, kernel: string, options: NormReduceOptions): { reduce: RmsNormReduce; workgroupSize: number } {
  const { device } = ctx.gpu;
  const software = ctx.gpu.adapter.isSoftware;
  const reduce: RmsNormReduce = options.reduce ?? (options.rowPerThread === undefined ? (software ? 'thread' : 'workgroup') : options.rowPerThread ? 'thread' : 'workgroup');
  if (!RMSNORM_REDUCES.includes(reduce)) throw new ArgumentError(`${kernel}: "${String(reduce)}" is not a reduction; use one of ${RMSNORM_REDUCES.join(', ')}`);
  if (reduce !== 'subgroup') {
    if (options.subgroupWorkgroupSize !== undefined) throw new ArgumentError(`${kernel}: subgroupWorkgroupSize is for the subgroup reduction only`);
    return { reduce, workgroupSize: reduce === 'thread' ? WG_ROWS : WG_PER_ROW };
  }
  if (!device.features.has('subgroups')) throw new GpuLimitError(`${kernel}: the subgroup reduction needs the 'subgroups' feature, which this device lacks`);
  const workgroupSize = options.subgroupWorkgroupSize ?? (software ? (subgroupMinSize(device) ?? WG_SOFTWARE_SUBGROUP) : WG_PER_ROW);
  const max = Math.min(device.limits.maxComputeWorkgroupSizeX, device.limits.maxComputeInvocationsPerWorkgroup);
  if (!Number.isInteger(workgroupSize) || workgroupSize < 1 || workgroupSize > max) {
    throw new ArgumentError(`${kernel}: subgroupWorkgroupSize must be an integer in 1 .. ${max}, got ${workgroupSize}`);
  }
  return { reduce, workgroupSize };
}
