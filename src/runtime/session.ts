// A session's latent cache: the token ids whose rows it holds, and the buffer, which grows in
// pages of positions (a short chat never holds a long context's memory). Growing copies the rows
// held into the larger buffer and drops the plans that pointed into the old one.

import type { GpuModel, PlanSet } from '../model/gpu_model.ts';
import type { LatentCache } from '../model/kv_cache.ts';
import { latentCacheBytes } from '../model/kv_cache.ts';

/** Positions per allocation step. */
export const CACHE_PAGE = 256;

export class SessionState {
  readonly id: number;
  /** Ids whose cache rows are written, in position order. */
  history: number[] = [];
  /** Generated ids not yet run through the model (the last sampled token). */
  tail: number[] = [];
  /** True while a request uses the session (requests on one session run one at a time). */
  busy = false;
  /** closeSession was called during a request: it stops at its next step and the session closes. */
  closing = false;
  /** Opened for one request (no Session handle): closed, its cache freed, when that request ends. */
  ephemeral = false;
  /** Waiting in the engine's queue for cache memory (holds none it is waiting for). */
  waiting = false;
  private cache: LatentCache | undefined;
  private planSet: PlanSet | undefined;
  private readonly model: GpuModel;
  private readonly cacheLayers: number;

  constructor(id: number, model: GpuModel) {
    this.id = id;
    this.model = model;
    this.cacheLayers = model.config.num_hidden_layers + (model.weights.mtp ? 1 : 0);
  }

  /** Positions the current buffer holds. */
  get capacity(): number {
    return this.cache?.maxT ?? 0;
  }

  /** Bytes the buffer takes. */
  get bytes(): number {
    return this.cache?.buffer.size ?? 0;
  }

  /** Bytes a buffer for `positions` (rounded up to pages, at most maxContext) would take. */
  bytesFor(positions: number, maxContext: number): number {
    return latentCacheBytes(this.model.config, this.cacheLayers, Math.min(maxContext, pagesOf(positions)));
  }

  get plans(): PlanSet {
    if (!this.planSet) throw new Error(`session ${this.id} has no cache yet`);
    return this.planSet;
  }

  /**
   * Makes room for `positions` positions, keeping the rows of `history`. `positions` is at most
   * maxContext: the engine checked the request against the limit at its API edge.
   */
  reserve(positions: number, maxContext: number): void {
    if (positions <= this.capacity) return;
    const maxT = Math.min(maxContext, pagesOf(positions));
    const next = this.model.createCache(maxT);
    const old = this.cache;
    if (old && this.history.length > 0) {
      const encoder = this.model.gpu.device.createCommandEncoder({ label: 'latent cache grow' });
      const rowBytes = 4 * old.width * this.history.length;
      for (let L = 0; L < old.layers; L++) encoder.copyBufferToBuffer(old.buffer, old.layerOffset(L), next.buffer, next.layerOffset(L), rowBytes);
      this.model.gpu.device.queue.submit([encoder.finish()]);
    }
    this.planSet?.destroy();
    old?.destroy();
    this.cache = next;
    this.planSet = this.model.plans(next);
  }

  /** Forget rows past `length` (they are overwritten by the next tokens). */
  truncate(length: number): void {
    this.history.length = Math.min(this.history.length, length);
  }

  /** Frees the buffers and forgets the history; the next request starts from an empty cache. */
  reset(): void {
    this.destroy();
  }

  destroy(): void {
    this.planSet?.destroy();
    this.cache?.destroy();
    this.planSet = undefined;
    this.cache = undefined;
    this.history = [];
    this.tail = [];
  }
}

function pagesOf(positions: number): number {
  return Math.max(1, Math.ceil(positions / CACHE_PAGE)) * CACHE_PAGE;
}

/** Length of the common prefix of two id lists. */
export function commonPrefix(a: readonly number[], b: readonly number[]): number {
  let n = 0;
  while (n < a.length && n < b.length && a[n] === b[n]) n++;
  return n;
}
