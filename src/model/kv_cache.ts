// The latent KV cache of one session (src/model/MATH.md 4.4, "Absorbed"): per layer and token one
// row [kv_a_layernorm(c_kv) (kv_lora_rank) | RoPE'd k_pe (qk_rope_head_dim)] f32, and nothing else
// (576 values per token per layer for V3, where per-head keys and values would take 40,960).
// One GPU buffer holds every layer; each layer's rows start at a binding-aligned offset so that
// kernels can bind one layer. A step's rows are written by prepareCacheWrite (mla_latent_norm).

import type { DeepseekV3Config } from '../config.ts';
import { GpuOutOfMemoryError } from '../errors.ts';
import type { MlaLatentNorm, PreparedMlaLatentNorm } from '../kernels/mla_latent_norm.ts';

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

export interface CacheWriteArgs {
  config: DeepseekV3Config;
  cache: LatentCache;
  layer: number;
  /** Position of the first of the T new rows; moved per step with setStartPos. */
  startPos: number;
  rows: number;
  /** [rows, kv_lora_rank + qk_rope_head_dim] f32: x @ kv_a_proj_with_mqa^T, the same row layout as the cache; read only. */
  kvA: GPUBuffer;
  /** [kv_lora_rank] f32 kv_a_layernorm weight. */
  kvNormWeight: GPUBuffer;
  /** [rows] u32 absolute positions of the new rows. */
  positions: GPUBuffer;
  /** [qk_rope_head_dim / 2] f32 YaRN inverse frequencies (kernels/rope_tables.ts). */
  invFreq: GPUBuffer;
  /**
   * q_lora_rank configs: q_a [rows, q_lora_rank] normed into qANorm by the same call with the
   * q_a_layernorm weight (the kernel's q_a_layernorm variant).
   */
  q?: { qA: GPUBuffer; weight: GPUBuffer; qANorm: GPUBuffer };
  /** Default latent_norm.<layer>. */
  label?: string;
}

/** The write, recorded into a compute pass; setStartPos moves it to rows startPos .. startPos + rows - 1. */
export type PreparedCacheWrite = PreparedMlaLatentNorm;

/**
 * Writes the new rows of one layer with one mla_latent_norm dispatch: the kv_a_proj_with_mqa output
 * already has the cache's row layout, so each row [kv_a_layernorm(c_kv) | RoPE(k_pe)] is computed
 * from it and stored at its position, with no copy (and, given q, q_a_layernorm in the same
 * dispatch). The bind group holds the layer's rows; only the start position follows the step, so
 * a decode plan prepares this once and moves it every step.
 */
export function prepareCacheWrite(kernel: MlaLatentNorm, args: CacheWriteArgs): PreparedCacheWrite {
  const { config, cache, rows, layer, q } = args;
  return kernel.prepare({
    rows,
    kvLoraRank: config.kv_lora_rank,
    ropeDim: config.qk_rope_head_dim,
    eps: config.rms_norm_eps,
    kvA: args.kvA,
    kvNormWeight: args.kvNormWeight,
    positions: args.positions,
    invFreq: args.invFreq,
    cache: { buffer: cache.buffer, offset: cache.layerOffset(layer), size: 4 * cache.maxT * cache.width },
    cacheRows: cache.maxT,
    startPos: args.startPos,
    q: q && { width: config.q_lora_rank!, ...q },
    label: args.label ?? `latent_norm.${layer}`,
  });
}

function alignUp(n: number, alignment: number): number {
  return Math.ceil(n / alignment) * alignment;
}
