// The latent KV cache of one session (src/model/MATH.md 4.4, "Absorbed"): per layer and token one
// row [kv_a_layernorm(c_kv) (kv_lora_rank) | RoPE'd k_pe (qk_rope_head_dim)] f32, and nothing else
// (576 values per token per layer for V3, where per-head keys and values would take 40,960).
// One GPU buffer holds every layer; each layer's rows start at a binding-aligned offset so that
// kernels can bind one layer.

import type { DeepseekV3Config } from '../config.ts';
import { ArgumentError, GpuOutOfMemoryError } from '../errors.ts';
import type { Kernel } from '../gpu/kernel.ts';
import type { RmsNorm } from '../kernels/rmsnorm.ts';
import type { RopeYarnArgs } from '../kernels/rope_yarn.ts';

export interface LatentCache {
  readonly buffer: GPUBuffer;
  /** Values per row: kv_lora_rank + qk_rope_head_dim. */
  readonly width: number;
  /** Rows (positions) per layer. */
  readonly maxT: number;
  readonly layers: number;
  /** Bytes from one layer's first row to the next layer's. */
  readonly layerStride: number;
  /** Byte offset of layer L's row 0. */
  layerOffset(layer: number): number;
  destroy(): void;
}

/** Bytes of a cache for `layers` layers of `maxT` positions (what a memory budget checks). */
export function latentCacheBytes(config: DeepseekV3Config, layers: number, maxT: number, alignment = 256): number {
  return layers * alignUp(4 * maxT * config.latent_cache_dim, alignment);
}

export function createLatentCache(device: GPUDevice, config: DeepseekV3Config, layers: number, maxT: number): LatentCache {
  const width = config.latent_cache_dim;
  const layerStride = alignUp(4 * maxT * width, device.limits.minStorageBufferOffsetAlignment);
  const size = layers * layerStride;
  if (size > device.limits.maxBufferSize) {
    throw new GpuOutOfMemoryError(
      `A latent cache of ${maxT} positions x ${layers} layers needs ${size} bytes, over this GPU's largest buffer (${device.limits.maxBufferSize}); use a shorter context.`,
    );
  }
  const buffer = device.createBuffer({ label: 'latent_cache', size, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC });
  return { buffer, width, maxT, layers, layerStride, layerOffset: (layer) => layer * layerStride, destroy: () => buffer.destroy() };
}

/** The kernels a cache write uses (the model's own). */
export interface CacheWriteKernels {
  readonly rmsnorm: RmsNorm;
  readonly rope: Kernel<RopeYarnArgs>;
}

export interface CacheWriteArgs {
  config: DeepseekV3Config;
  cache: LatentCache;
  layer: number;
  /** Position of the first of the T new rows; moved per step with setStartPos. */
  startPos: number;
  rows: number;
  /** [rows, kv_lora_rank + qk_rope_head_dim] f32: x @ kv_a_proj_with_mqa^T, the same row layout as the cache. RoPE is applied to its k_pe part in place. */
  kvA: GPUBuffer;
  /** [kv_lora_rank] f32 kv_a_layernorm weight. */
  kvNormWeight: GPUBuffer;
  /** [rows] u32 absolute positions of the new rows. */
  positions: GPUBuffer;
  /** [qk_rope_head_dim / 2] f32 YaRN inverse frequencies (kernels/rope_tables.ts). */
  invFreq: GPUBuffer;
}

export interface PreparedCacheWrite {
  /** Moves the write to rows startPos .. startPos + rows - 1 for the next encode (one small params write). */
  setStartPos(startPos: number): void;
  /** Record the write: RoPE on kvA's k_pe in place, a copy of the rows into the cache, then kv_a_layernorm over the copied c_kv. */
  encode(encoder: GPUCommandEncoder): void;
  destroy(): void;
}

/**
 * Writes the new rows of one layer. The kv_a_proj_with_mqa output already has the cache's row layout,
 * so after RoPE on its k_pe part one copy brings k_pe into place; RMSNorm then writes c_hat over the
 * copied c_kv (its input stays in kvA: a kernel may not read and write one buffer). The bind groups
 * are fixed; only the copy's offset and the norm's output offset follow startPos, so a decode plan
 * prepares this once and moves it every step.
 */
export function prepareCacheWrite(kernels: CacheWriteKernels, args: CacheWriteArgs): PreparedCacheWrite {
  const { config, cache, rows, layer } = args;
  const rkv = config.kv_lora_rank;
  const width = cache.width;
  const layerFirst = cache.layerOffset(layer) / 4; // element index of the layer's row 0
  const checkStart = (startPos: number) => {
    if (!(Number.isInteger(startPos) && startPos >= 0 && startPos + rows <= cache.maxT)) {
      throw new ArgumentError(`latent cache: rows ${startPos}..${startPos + rows - 1} do not fit its ${cache.maxT} positions`);
    }
  };
  checkStart(args.startPos);
  let firstRow = layerFirst + args.startPos * width;
  const rope = kernels.rope.prepare({
    rows,
    heads: 1,
    ropeDim: config.qk_rope_head_dim,
    rowStride: width,
    headStride: width,
    ropeOffset: rkv,
    x: args.kvA,
    positions: args.positions,
    invFreq: args.invFreq,
    label: `k_pe.${layer}`,
  });
  const norm = kernels.rmsnorm.prepare({
    rows,
    width: rkv,
    eps: config.rms_norm_eps,
    x: args.kvA,
    weight: args.kvNormWeight,
    y: cache.buffer,
    xLayout: { stride: width, offset: 0 },
    yLayout: { stride: width, offset: firstRow },
    label: `kv_a_layernorm.${layer}`,
  });
  return {
    setStartPos(startPos) {
      checkStart(startPos);
      firstRow = layerFirst + startPos * width;
      norm.setYOffset(firstRow);
    },
    encode(encoder) {
      const ropePass = encoder.beginComputePass({ label: `k_pe_rope.${layer}` });
      rope.encode(ropePass);
      ropePass.end();
      encoder.copyBufferToBuffer(args.kvA, 0, cache.buffer, 4 * firstRow, 4 * rows * width);
      const normPass = encoder.beginComputePass({ label: `kv_a_layernorm.${layer}` });
      norm.encode(normPass);
      normPass.end();
    },
    destroy() {
      norm.destroy();
      rope.destroy();
    },
  };
}

function alignUp(n: number, alignment: number): number {
  return Math.ceil(n / alignment) * alignment;
}
