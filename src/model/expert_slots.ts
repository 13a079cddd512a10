// Which routed experts of one MoE layer sit in its GPU expert cache, when the model is larger than
// the GPU's budget: `slots` places for `experts` experts. A step asks for the experts its router
// chose; each one not resident takes a slot (an upload), and the slot's old expert is evicted.
//
// Eviction by frequency with decay: each use adds 1 to an expert's score and every later request
// multiplies it by `decay` (0.97: a use counts half after ~23 requests), the lowest score leaves,
// ties broken by least recent use. Routing is skewed (some experts are chosen far more than
// others), so keeping the frequent ones beats keeping the recent ones: on the shipped checkpoint's
// routing (tools/expert_cache_sim.ts, BENCHMARKS.md) it misses 0.235 of accesses at 8 of 16 slots
// where LRU misses 0.287, and 0.132 at 10 slots where LRU misses 0.164 (at most 4 slots, the 4
// experts of a token leave no choice). The decay lets the cache follow a conversation that moves
// to other experts; 'lru' stays for that comparison.

import { ArgumentError } from '../errors.ts';

export type EvictionPolicy = 'frequency' | 'lru';

export interface ExpertSlotsOptions {
  experts: number;
  slots: number;
  policy?: EvictionPolicy;
  /** Per request, the factor a frequency score decays by (default 0.97). */
  decay?: number;
}

export interface Placement {
  /** For each id asked for, in order, the slot that holds it. */
  slots: number[];
  /** The experts to upload before the step reads them, and where. */
  uploads: { expert: number; slot: number }[];
  /** Ids asked for that were resident already (each distinct id counts once). */
  hits: number;
}

export class ExpertSlots {
  readonly experts: number;
  readonly slots: number;
  readonly policy: EvictionPolicy;
  private readonly decay: number;
  /** expert -> slot, -1 when not resident. */
  private readonly slotOf: Int32Array;
  /** slot -> expert, -1 when empty. */
  private readonly expertIn: Int32Array;
  private readonly score: Float64Array;
  /** The request at which score was last brought up to date, per expert. */
  private readonly scoredAt: Float64Array;
  private readonly lastUse: Float64Array;
  private requests = 0;

  constructor({ experts, slots, policy = 'frequency', decay = 0.97 }: ExpertSlotsOptions) {
    if (!(Number.isInteger(experts) && experts >= 1)) throw new ArgumentError(`expert slots: experts must be a positive integer, got ${experts}`);
    if (!(Number.isInteger(slots) && slots >= 1 && slots <= experts)) throw new ArgumentError(`expert slots: slots must be an integer in [1, ${experts}], got ${slots}`);
    if (!(decay > 0 && decay <= 1)) throw new ArgumentError(`expert slots: decay must be in (0, 1], got ${decay}`);
    this.experts = experts;
    this.slots = slots;
    this.policy = policy;
    this.decay = decay;
    this.slotOf = new Int32Array(experts).fill(-1);
    this.expertIn = new Int32Array(slots).fill(-1);
    this.score = new Float64Array(experts);
    this.scoredAt = new Float64Array(experts);
    this.lastUse = new Float64Array(experts).fill(-1);
  }

  /** The slot of `expert`, or -1. */
  slot(expert: number): number {
    return this.slotOf[expert];
  }

  /** The expert in `slot`, or -1. */
  expert(slot: number): number {
    return this.expertIn[slot];
  }

  /**
   * Makes every id of one request resident (at most `slots` distinct ids: a request for more is
   * split by the caller into passes). The ids of the request are never evicted by each other.
   */
  place(ids: readonly number[]): Placement {
    const distinct = [...new Set(ids)];
    for (const id of distinct) {
      if (!(Number.isInteger(id) && id >= 0 && id < this.experts)) throw new ArgumentError(`expert slots: expert ${id} is not in [0, ${this.experts})`);
    }
    if (distinct.length > this.slots) {
      throw new ArgumentError(`expert slots: ${distinct.length} distinct experts asked for at once, over the ${this.slots} slots: split the request`);
    }
    const t = ++this.requests;
    const wanted = new Set(distinct);
    const uploads: Placement['uploads'] = [];
    let hits = 0;
    for (const id of distinct) {
      if (this.slotOf[id] >= 0) {
        hits++;
        continue;
      }
      const slot = this.freeSlot(wanted, t);
      const old = this.expertIn[slot];
      if (old >= 0) this.slotOf[old] = -1;
      this.expertIn[slot] = id;
      this.slotOf[id] = slot;
      uploads.push({ expert: id, slot });
    }
    for (const id of distinct) this.use(id, t);
    return { slots: ids.map((id) => this.slotOf[id]), uploads, hits };
  }

  /** Forgets what a slot holds (its upload failed or was abandoned): the next request uploads again. */
  invalidate(slot: number): void {
    const old = this.expertIn[slot];
    if (old >= 0) this.slotOf[old] = -1;
    this.expertIn[slot] = -1;
  }

  private use(id: number, t: number): void {
    this.score[id] = this.decayed(id, t) + 1;
    this.scoredAt[id] = t;
    this.lastUse[id] = t;
  }

  private decayed(id: number, t: number): number {
    return this.score[id] * Math.pow(this.decay, t - this.scoredAt[id]);
  }

  /** An empty slot, else the slot of the resident expert (not wanted now) to evict. */
  private freeSlot(wanted: Set<number>, t: number): number {
    let best = -1;
    let bestScore = Infinity;
    let bestUse = Infinity;
    for (let s = 0; s < this.slots; s++) {
      const e = this.expertIn[s];
      if (e < 0) return s;
      if (wanted.has(e)) continue;
      const score = this.policy === 'lru' ? this.lastUse[e] : this.decayed(e, t);
      const use = this.lastUse[e];
      if (score < bestScore || (score === bestScore && use < bestUse)) [best, bestScore, bestUse] = [s, score, use];
    }
    return best; // never -1: at most `slots` ids are wanted, and an empty slot returns above
  }
}
