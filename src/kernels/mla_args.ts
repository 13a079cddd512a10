// Argument checks and bindings shared by the two MLA kernels over the latent cache (mla_decode,
// mla_prefill): both take q_lat, q_pe, one layer of the cache and o_lat with the same shapes and layout.

import { ArgumentError } from '../errors.ts';
import { checkBindings, checkCounts } from '../gpu/kernel.ts';

/** The arguments of both kernels: query rows at startPos .. startPos + rows - 1 over one layer of the cache. */
export interface MlaAttentionArgs {
  /** Query rows: 1 for a decode step, 2 for the MTP verify step, T for a prefill chunk. */
  rows: number;
  /** num_attention_heads. */
  heads: number;
  /** kv_lora_rank (rkv). */
  kvLoraRank: number;
  /** qk_rope_head_dim (dr). */
  ropeDim: number;
  /** Cache rows the layer holds (the cache binding's length). */
  maxT: number;
  /** Absolute position of query row 0 (row r attends to 0 .. startPos + r); changed with setStartPos. */
  startPos: number;
  /** softmax_scale of the config (dq^-0.5 * mscale^2). */
  softmaxScale: number;
  /** [rows, heads, kvLoraRank] f32: q_nope @ W_UK. */
  qLat: GPUBuffer;
  /** [rows, heads, ropeDim] f32, RoPE applied. */
  qPe: GPUBuffer;
  /** [maxT, kvLoraRank + ropeDim] f32 at cacheByteOffset: row t = [c_hat(t) | k_pe(t)]; rows 0 .. startPos + rows - 1 written. */
  cache: GPUBuffer;
  /** Where this layer's cache starts (a multiple of minStorageBufferOffsetAlignment). Default 0. */
  cacheByteOffset?: number;
  /** [rows, heads, kvLoraRank] f32 output. */
  oLat: GPUBuffer;
  label?: string;
}

type MlaBuffers = Omit<MlaAttentionArgs, 'startPos' | 'softmaxScale' | 'label'>;

/** Throws an ArgumentError naming the kernel (`label`) and the argument that does not fit. */
export function checkMlaArgs(device: GPUDevice, label: string, args: MlaBuffers): void {
  const { rows, heads, kvLoraRank: rkv, ropeDim: dr, maxT } = args;
  checkCounts(label, { rows, heads, kvLoraRank: rkv, maxT });
  checkCounts(label, { ropeDim: dr }, 0);
  // The shaders read vec4s (V3: 512 and 64; the fixture: 256 and 32).
  if (rkv % 4 !== 0 || dr % 4 !== 0) throw new ArgumentError(`${label}: kvLoraRank ${rkv} and ropeDim ${dr} must be multiples of 4`);
  const cacheByteOffset = args.cacheByteOffset ?? 0;
  if (cacheByteOffset % device.limits.minStorageBufferOffsetAlignment !== 0) {
    throw new ArgumentError(`${label}: cacheByteOffset ${cacheByteOffset} is not a multiple of ${device.limits.minStorageBufferOffsetAlignment}`);
  }
  const io = mlaCacheBindings(args);
  checkBindings(device, label, {
    cache: [{ buffer: args.cache, offset: cacheByteOffset }, io.cache.size],
    qLat: [args.qLat, io.qLat.size],
    qPe: [args.qPe, io.qPe.size],
    oLat: [args.oLat, io.oLat.size],
  });
}

/** The exact ranges the kernels bind: the query rows' q_lat, q_pe and o_lat, and one layer of the cache. */
export function mlaCacheBindings(args: MlaBuffers): Record<'qLat' | 'qPe' | 'cache' | 'oLat', GPUBufferBinding & { size: number }> {
  const { rows, heads, kvLoraRank: rkv, ropeDim: dr, maxT } = args;
  return {
    qLat: { buffer: args.qLat, size: 4 * rows * heads * rkv },
    // dr = 0 would be an empty binding: bind one vec4 that is never read.
    qPe: { buffer: args.qPe, size: 4 * Math.max(4, rows * heads * dr) },
    cache: { buffer: args.cache, offset: args.cacheByteOffset ?? 0, size: 4 * maxT * (rkv + dr) },
    oLat: { buffer: args.oLat, size: 4 * rows * heads * rkv },
  };
}

/** Throws unless query rows startPos .. startPos + rows - 1 fit the cache. */
export function checkStartPos(label: string, startPos: number, rows: number, maxT: number): void {
  if (!(Number.isInteger(startPos) && startPos >= 0 && startPos + rows <= maxT)) {
    throw new ArgumentError(`${label}: startPos ${startPos} + ${rows} query rows does not fit the cache of ${maxT} positions`);
  }
}
