// act_quant for the W8A8 path: x [M, K] f32 -> e4m3 codes [M, K] (4 per u32) and scales
// [M, K/128], the inputs of gemv_fp8 / gemm_fp8 with numerics "w8a8". One call quantises the
// input of every Linear that reads it (q_a_proj and kv_a_proj_with_mqa share one).
// Shader: shaders/act_quant.wgsl (+ fp8_e4m3.wgsl); reference: act_quant.ref.ts.

import actQuantSource from '../../shaders/act_quant.wgsl?raw';
import fp8Source from '../../shaders/fp8_e4m3.wgsl?raw';
import type { Gpu } from '../gpu/device.ts';
import { ArgumentError } from '../errors.ts';
import { workgroupGrid } from '../gpu/dispatch.ts';
import { BLOCK, type PreparedCall } from './matmul_operands.ts';
import type { CachedPipeline, PipelineCache } from './pipeline_cache.ts';
import { composeShader } from './shader_compose.ts';

export interface ActQuantArgs {
  M: number;
  /** A multiple of 128. */
  K: number;
  /** [M, K] f32. */
  x: GPUBuffer;
  /** [M, K] e4m3 codes, 4 per u32 (M * K bytes), written. */
  codes: GPUBuffer;
  /** [M, K/128] f32, written. */
  scales: GPUBuffer;
  label?: string;
}

export interface ActQuant {
  prepare(args: ActQuantArgs): PreparedCall;
}

const WORKGROUP_SIZE = 64;
const AXES = { output: ['codes', 'dequantized'] } as const;

/** Bytes read and written; about 4 FLOPs per element (abs, max, divide, round). */
export function actQuantCost({ M, K }: { M: number; K: number }): { bytes: number; flops: number } {
  return { bytes: 4 * M * K + M * K + (4 * M * K) / BLOCK, flops: 4 * M * K };
}

type Output = (typeof AXES.output)[number];

/** The pipeline of one output variant: codes + scales, or the dequantized values in place. */
function actQuantPipeline(cache: PipelineCache, output: Output): CachedPipeline {
  const storage = (binding: number, type: GPUBufferBindingType): GPUBindGroupLayoutEntry => ({ binding, visibility: GPUShaderStage.COMPUTE, buffer: { type } });
  const entries = output === 'codes' ? [storage(0, 'uniform'), storage(1, 'read-only-storage'), storage(2, 'storage'), storage(3, 'storage')] : [storage(0, 'uniform'), storage(1, 'storage')];
  return cache.get({ kernel: 'act_quant', variant: { output }, constants: { WORKGROUP_SIZE } }, () => ({
    code: composeShader({ kernel: { name: 'act_quant.wgsl', code: actQuantSource }, snippets: [{ name: 'fp8_e4m3.wgsl', code: fp8Source }], axes: AXES, variant: { output } }),
    entries,
  }));
}

/** Throws unless M >= 1 and K is a whole number of 128-wide groups. */
function checkShape(label: string, M: number, K: number): void {
  if (!Number.isInteger(M) || M < 1) throw new ArgumentError(`${label}: M must be a positive integer, got ${M}`);
  if (!Number.isInteger(K) || K < 1 || K % BLOCK !== 0) {
    throw new ArgumentError(`${label}: K must be a multiple of ${BLOCK} (the official act_quant asserts it), got K=${K}`);
  }
}

/** The params, bind group and dispatch of one call: one invocation per (row, group). */
function prepareCall(device: GPUDevice, kernel: CachedPipeline, label: string, M: number, K: number, bindings: GPUBufferBinding[], cost: { bytes: number; flops: number }): PreparedCall {
  const groups = K / BLOCK;
  const params = device.createBuffer({ label: `${label}.params`, size: 16, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
  device.queue.writeBuffer(params, 0, new Uint32Array([M, K, groups, 0]));
  const bindGroup = device.createBindGroup({
    label,
    layout: kernel.bindGroupLayout,
    entries: [{ buffer: params }, ...bindings].map((resource, binding) => ({ binding, resource })),
  });
  const [gx, gy] = workgroupGrid(Math.ceil((M * groups) / WORKGROUP_SIZE), device.limits.maxComputeWorkgroupsPerDimension);
  return {
    ...cost,
    encode(pass) {
      pass.setPipeline(kernel.pipeline);
      pass.setBindGroup(0, bindGroup);
      pass.dispatchWorkgroups(gx, gy);
    },
    destroy() {
      params.destroy();
    },
  };
}

export function createActQuant({ gpu, cache }: { gpu: Gpu; cache: PipelineCache }): ActQuant {
  const kernel = actQuantPipeline(cache, 'codes');
  const { device } = gpu;

  return {
    prepare({ M, K, x, codes, scales, label = 'act_quant' }) {
      checkShape(label, M, K);
      const needs: [string, GPUBuffer, number][] = [
        ['x', x, 4 * M * K],
        ['codes', codes, M * K],
        ['scales', scales, (4 * M * K) / BLOCK],
      ];
      for (const [name, buffer, bytes] of needs) {
        if (buffer.size < bytes) throw new ArgumentError(`${label}: ${name} holds ${buffer.size} bytes, M=${M} K=${K} needs ${bytes}`);
      }
      return prepareCall(device, kernel, label, M, K, [{ buffer: x }, { buffer: codes }, { buffer: scales }], actQuantCost({ M, K }));
    },
  };
}

export interface ActRoundArgs {
  M: number;
  /** A multiple of 128. */
  K: number;
  /** [M, K] f32, replaced in place by the FP8 value each element quantises to: e4m3(code) * scale. */
  x: GPUBuffer;
  label?: string;
}

/**
 * act_quant's `dequantized` output: the activations the official fp8_gemm multiplies, written back
 * as f32 in place, for the kernels that read f32 inputs (the experts) on the W8A8 path.
 */
export function createActRound({ device, cache }: { device: GPUDevice; cache: PipelineCache }): { prepare(args: ActRoundArgs): PreparedCall } {
  const kernel = actQuantPipeline(cache, 'dequantized');
  return {
    prepare({ M, K, x, label = 'act_round' }) {
      checkShape(label, M, K);
      if (x.size < 4 * M * K) throw new ArgumentError(`${label}: x holds ${x.size} bytes, M=${M} K=${K} needs ${4 * M * K}`);
      return prepareCall(device, kernel, label, M, K, [{ buffer: x, size: 4 * M * K }], { bytes: 8 * M * K, flops: 4 * M * K });
    },
  };
}
