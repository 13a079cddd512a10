// Models larger than the GPU: the routed experts of every MoE layer live in CPU memory (one stack
// per projection, laid out as the GPU stack would be), and the GPU holds a cache of `slots`
// experts per layer. A step reads back each MoE layer's router choices, uploads the experts it
// misses (queue.writeBuffer from the CPU stack into a slot) and runs the layer's experts over the
// cache with slot ids (moe_experts' prepareSlots). When a step needs more distinct experts than a
// layer has slots (a prefill chunk), the layer runs in passes, each over as many as fit, every
// pair's output kept and summed in order at the end: the logits equal the all-resident ones bit
// for bit. Everything else (attention, dense layers, shared experts, router, head) stays resident.
//
// Where the experts wait off the GPU is an ExpertStore: CPU stacks (HostExperts, filled as the
// checkpoint streams in), or the checkpoint's own files, read at each miss (checkpoint_experts.ts).
// Which expert leaves a full cache: ExpertSlots (decayed frequency, measured in BENCHMARKS.md).

import { ArgumentError, GpuOutOfMemoryError } from '../errors.ts';
import { align4 } from '../gpu/buffers.ts';
import type { MlpWeights } from '../kernels/moe_experts.ts';
import type { GpuTensor } from './placement.ts';
import { stackedExpertName, weightBufferSize } from './placement.ts';
import { ExpertSlots, type EvictionPolicy } from './expert_slots.ts';

export const PROJECTIONS = ['gate_proj', 'up_proj', 'down_proj'] as const;
type Projection = (typeof PROJECTIONS)[number];

/** One stacked tensor of one layer's experts (a projection's weight or its weight_scale_inv). */
export interface StackInfo {
  /** The stacked name, as placement.ts names the GPU stack: model.layers.L.mlp.experts.P.weight[_scale_inv]. */
  readonly name: string;
  /** Bytes of one expert's tensor, 4-byte aligned: a slot. */
  readonly slotBytes: number;
  readonly experts: number;
}

/** A stack in CPU memory: expert e's bytes at e * slotBytes. */
export interface HostStack extends StackInfo {
  readonly bytes: Uint8Array<ArrayBuffer>;
}

/** One expert's tensors, each as a slot of its stack (slotBytes long, zero-padded). */
export type ExpertBytes = Readonly<Record<Projection, { weight: Uint8Array<ArrayBuffer>; scale?: Uint8Array<ArrayBuffer> }>>;

/**
 * Where one MoE layer's routed experts are kept off the GPU: CPU stacks (HostExperts), or the
 * checkpoint itself, read per miss (checkpoint_experts.ts).
 */
export interface ExpertStore {
  readonly layer: number;
  readonly experts: number;
  readonly stacks: Readonly<Record<Projection, { weight: StackInfo; scale?: StackInfo }>>;
  /** Bytes of one expert (all its projections and scales): what a miss uploads. */
  readonly expertBytes: number;
  /** Bytes held in CPU memory for it. */
  readonly hostBytes: number;
  /** Expert e's slots (a read of the checkpoint where the store is one). */
  read(expert: number): ExpertBytes | Promise<ExpertBytes>;
}

/** The CPU stacks of one MoE layer's routed experts: each projection's weight, and its scales for FP8. */
export interface HostExperts extends ExpertStore {
  readonly stacks: Readonly<Record<Projection, { weight: HostStack; scale?: HostStack }>>;
  /** The same stacks by stacked name. */
  readonly byName: ReadonlyMap<string, HostStack>;
}

const LAYER = /^model\.layers\.(\d+)\.mlp\.experts\./;

/**
 * Splits the tensors going to the GPU into those that stay resident and the routed experts of
 * `layers` (all MoE layers, the MTP one included), which go to CPU memory.
 */
export function splitOffloaded<T extends GpuTensor>(tensors: readonly T[], layers: ReadonlySet<number>): { resident: T[]; offloaded: T[] } {
  const resident: T[] = [];
  const offloaded: T[] = [];
  for (const t of tensors) {
    const m = LAYER.exec(t.name);
    (m && layers.has(Number(m[1])) ? offloaded : resident).push(t);
  }
  return { resident, offloaded };
}

/** The layout of the CPU stacks (and of each layer's GPU cache) for these expert tensors. */
export interface OffloadLayout {
  /** Per layer, per stacked name: bytes of a slot and the experts. */
  readonly stacks: ReadonlyMap<number, ReadonlyMap<string, { slotBytes: number; experts: number }>>;
  /** Where a checkpoint tensor goes: its stack and expert. */
  readonly of: ReadonlyMap<string, { layer: number; stacked: string; expert: number }>;
}

export function offloadLayout(offloaded: readonly GpuTensor[]): OffloadLayout {
  const stacks = new Map<number, Map<string, { slotBytes: number; experts: number }>>();
  const of = new Map<string, { layer: number; stacked: string; expert: number }>();
  for (const t of offloaded) {
    const s = stackedExpertName(t.name)!;
    const layer = Number(LAYER.exec(t.name)![1]);
    const byName = stacks.get(layer) ?? new Map();
    stacks.set(layer, byName);
    const entry = byName.get(s.stacked) ?? { slotBytes: align4(t.byteLength), experts: 0 };
    entry.experts = Math.max(entry.experts, s.expert + 1);
    byName.set(s.stacked, entry);
    of.set(t.name, { layer, stacked: s.stacked, expert: s.expert });
  }
  return { stacks, of };
}

/** Bytes of every layer's GPU expert cache at `slots` per layer. */
export function expertCacheBytes(layout: OffloadLayout, slots: number): number {
  let bytes = 0;
  for (const byName of layout.stacks.values()) for (const s of byName.values()) bytes += weightBufferSize(slots * s.slotBytes);
  return bytes;
}

/** Bytes of every layer's CPU stacks. */
export function hostStackBytes(layout: OffloadLayout): number {
  let bytes = 0;
  for (const byName of layout.stacks.values()) for (const s of byName.values()) bytes += s.experts * s.slotBytes;
  return bytes;
}

/** The most slots per layer whose largest cache buffer fits a binding of `bindingLimit` bytes. */
export function slotsWithinBinding(layout: OffloadLayout, bindingLimit: number): number {
  let most = Infinity;
  for (const byName of layout.stacks.values()) for (const s of byName.values()) most = Math.min(most, s.experts, Math.floor(bindingLimit / s.slotBytes));
  return most;
}

/** A CPU stack's bytes; a browser or Node refusing them is the typed out-of-memory error (with the total asked for). */
function allocateStack(n: number, layout: OffloadLayout): Uint8Array<ArrayBuffer> {
  try {
    return new Uint8Array(n);
  } catch (err) {
    if (!(err instanceof RangeError)) throw err;
    throw new GpuOutOfMemoryError(`Out of CPU memory for the routed experts: ${(hostStackBytes(layout) / 2 ** 30).toFixed(2)} GiB are kept in CPU memory when they are offloaded (${err.message}). Close other tabs or load a smaller model.`);
  }
}

/** Allocates the CPU stacks of the layout (zeroed; the loader fills them). */
export function allocateHostExperts(layout: OffloadLayout): Map<number, HostExperts> {
  const out = new Map<number, HostExperts>();
  for (const [layer, byName] of layout.stacks) {
    const made = new Map<string, HostStack>();
    const stack = (name: string): HostStack | undefined => {
      const s = byName.get(name);
      if (!s) return undefined;
      const host = { name, bytes: allocateStack(s.experts * s.slotBytes, layout), slotBytes: s.slotBytes, experts: s.experts };
      made.set(name, host);
      return host;
    };
    const prefix = `model.layers.${layer}.mlp.experts.`;
    const stacks = Object.fromEntries(
      PROJECTIONS.map((p) => {
        const weight = stack(`${prefix}${p}.weight`);
        if (!weight) throw new ArgumentError(`expert offload: layer ${layer} has no ${p} experts`);
        return [p, { weight, scale: stack(`${prefix}${p}.weight_scale_inv`) }];
      }),
    ) as HostExperts['stacks'];
    const experts = stacks.gate_proj.weight.experts;
    const expertBytes = PROJECTIONS.reduce((sum, p) => sum + stacks[p].weight.slotBytes + (stacks[p].scale?.slotBytes ?? 0), 0);
    if (made.size !== byName.size) throw new ArgumentError(`expert offload: layer ${layer} has expert tensors other than the projections and their scales: ${[...byName.keys()].filter((n) => !made.has(n)).join(', ')}`);
    const slot = (h: HostStack, e: number) => h.bytes.subarray(e * h.slotBytes, (e + 1) * h.slotBytes);
    out.set(layer, {
      layer, experts, stacks, byName: made, expertBytes,
      hostBytes: [...made.values()].reduce((sum, h) => sum + h.bytes.byteLength, 0),
      read: (e) => Object.fromEntries(PROJECTIONS.map((p) => [p, { weight: slot(stacks[p].weight, e), scale: stacks[p].scale && slot(stacks[p].scale!, e) }])) as ExpertBytes,
    });
  }
  return out;
}

/** Counters of one model's expert caches, summed over layers. */
export interface OffloadCounters {
  /** Experts a step asked for that were resident (each distinct expert of a step's layer once). */
  hits: number;
  /** Experts uploaded. */
  misses: number;
  uploadedBytes: number;
  /** Milliseconds a step waited for a MoE layer's router choices (the GPU work before it included). */
  routeWaitMs: number;
  /** Passes over a layer's experts beyond the first (a step needing more experts than slots). */
  extraPasses: number;
}

/** One MoE layer's GPU cache of `slots` experts, filled from its store. */
export class ExpertCache {
  readonly layer: number;
  readonly slots: number;
  /** The cache as a stack of `slots` experts, for the expert kernels. */
  readonly weights: MlpWeights;
  readonly bytes: number;
  readonly counters: OffloadCounters;
  private readonly buffers: GPUBuffer[] = [];
  private readonly placement: ExpertSlots;

  constructor(
    private readonly device: GPUDevice,
    private readonly host: ExpertStore,
    slots: number,
    counters: OffloadCounters,
    policy: EvictionPolicy = 'frequency',
  ) {
    this.layer = host.layer;
    this.slots = slots;
    this.counters = counters;
    this.placement = new ExpertSlots({ experts: host.experts, slots, policy });
    const make = (s: StackInfo) => {
      const buffer = device.createBuffer({ label: `${s.name} (cache of ${slots})`, size: weightBufferSize(slots * s.slotBytes), usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });
      this.buffers.push(buffer);
      return buffer;
    };
    try {
      const projection = (p: Projection) => ({ weight: make(host.stacks[p].weight), weight_scale_inv: host.stacks[p].scale && make(host.stacks[p].scale!) });
      this.weights = { gate_proj: projection('gate_proj'), up_proj: projection('up_proj'), down_proj: projection('down_proj') };
    } catch (err) {
      this.destroy();
      throw err;
    }
    this.bytes = this.buffers.reduce((sum, b) => sum + b.size, 0);
  }

  /**
   * The passes a step's `ids` (its pairs' experts) take: each pass's experts are made resident
   * (uploads queued) when the pass is reached, and it yields the slot id of every pair, `slots`
   * for a pair whose expert is not in that pass, and whether it is the last. The caller submits a
   * pass's work before asking for the next one (the uploads of the next may overwrite its slots;
   * the queue keeps the order); the last may go with whatever is submitted after it.
   * Resident experts go in the first pass, so a step that fits in the cache uploads only misses.
   */
  async *passes(ids: Uint32Array): AsyncGenerator<{ slotIds: Uint32Array<ArrayBuffer>; last: boolean }> {
    const distinct = [...new Set(ids)].sort((a, b) => a - b);
    for (const e of distinct) {
      if (e >= this.host.experts) throw new ArgumentError(`expert offload: layer ${this.layer} was asked for expert ${e} of ${this.host.experts}`);
    }
    const resident = distinct.filter((e) => this.placement.slot(e) >= 0);
    const order = [...resident, ...distinct.filter((e) => this.placement.slot(e) < 0)];
    for (let first = 0; first < order.length; first += this.slots) {
      const batch = order.slice(first, first + this.slots);
      if (first > 0) this.counters.extraPasses++;
      const placed = this.placement.place(batch);
      this.counters.hits += placed.hits;
      await this.upload(placed.uploads);
      const inBatch = new Map(batch.map((e, i) => [e, placed.slots[i]]));
      yield { slotIds: Uint32Array.from(ids, (e) => inBatch.get(e) ?? this.slots), last: first + this.slots >= order.length };
    }
  }

  /** The expert in each slot (-1: empty). */
  resident(): number[] {
    return Array.from({ length: this.slots }, (_, s) => this.placement.expert(s));
  }

  /** Writes each expert into its slot; a read that fails leaves its slot empty (never half-trusted). */
  private async upload(uploads: readonly { expert: number; slot: number }[]): Promise<void> {
    const results = await Promise.allSettled(uploads.map(async ({ expert, slot }) => {
      const bytes = await this.host.read(expert);
      for (const p of PROJECTIONS) {
        const { weight, scale } = this.host.stacks[p];
        this.device.queue.writeBuffer(this.weights[p].weight, slot * weight.slotBytes, bytes[p].weight);
        if (scale) this.device.queue.writeBuffer(this.weights[p].weight_scale_inv!, slot * scale.slotBytes, bytes[p].scale!);
      }
      this.counters.misses++;
      this.counters.uploadedBytes += this.host.expertBytes;
    }));
    const failed = results.findIndex((r) => r.status === 'rejected');
    if (failed < 0) return;
    results.forEach((r, i) => r.status === 'rejected' && this.placement.invalidate(uploads[i].slot));
    throw (results[failed] as PromiseRejectedResult).reason;
  }

  destroy(): void {
    for (const b of this.buffers.splice(0)) b.destroy();
  }
}

/** Every MoE layer's cache, and what they count. */
export interface ExpertOffload {
  readonly slots: number;
  readonly caches: ReadonlyMap<number, ExpertCache>;
  /** Where each layer's experts are kept: CPU stacks, or the checkpoint. */
  readonly hosts: ReadonlyMap<number, ExpertStore>;
  /** Bytes of the GPU caches. */
  readonly cacheBytes: number;
  /** Bytes of the CPU stacks. */
  readonly hostBytes: number;
  readonly counters: OffloadCounters;
  destroy(): void;
}

export function createExpertOffload(device: GPUDevice, hosts: ReadonlyMap<number, ExpertStore>, slots: number, policy?: EvictionPolicy): ExpertOffload {
  const counters: OffloadCounters = { hits: 0, misses: 0, uploadedBytes: 0, routeWaitMs: 0, extraPasses: 0 };
  const caches = new Map<number, ExpertCache>();
  const destroy = () => {
    for (const c of caches.values()) c.destroy();
    caches.clear();
  };
  try {
    for (const [layer, host] of hosts) {
      if (!(Number.isInteger(slots) && slots >= 1 && slots <= host.experts)) throw new ArgumentError(`expert offload: slots must be an integer in [1, ${host.experts}], got ${slots}`);
      caches.set(layer, new ExpertCache(device, host, slots, counters, policy));
    }
  } catch (err) {
    destroy();
    throw err;
  }
  let hostBytes = 0;
  for (const h of hosts.values()) hostBytes += h.hostBytes;
  return { slots, caches, hosts, cacheBytes: [...caches.values()].reduce((s, c) => s + c.bytes, 0), hostBytes, counters, destroy };
}
