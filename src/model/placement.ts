// Where each checkpoint tensor lives on the GPU. Most tensors get a buffer of their own, under
// their checkpoint name. Two re-layouts:
// - Routed experts are stacked, so that a kernel can index one buffer with the router's expert ids
//   on the GPU (no readback, one binding):
//     model.layers.L.mlp.experts.E.P.weight            -> model.layers.L.mlp.experts.P.weight, slot E
//     model.layers.L.mlp.experts.E.P.weight_scale_inv  -> model.layers.L.mlp.experts.P.weight_scale_inv, slot E
//   Each slot starts at a 4-byte boundary: slot E is at E * align4(bytes of one expert's tensor).
// - A buffer larger than the binding limit the engine plans with is split into pieces of their own
//   (a browser binds 128 MiB - 2 GiB; DeepSeek-V3's embedding is 1.85 GB): a tensor the kernels
//   can read in row bands by rows (`name[first:end]`, whole 128-row blocks for FP8, its
//   `_scale_inv` by the same block rows), a stack by expert ranges (slot e - first in its piece).

import { CheckpointError, GpuLimitError } from '../errors.ts';
import { align4 } from '../gpu/buffers.ts';
import { BLOCK } from '../gpu/kernel.ts';

/** A tensor as it will be on the GPU (a checkpoint's, or one the loader makes from it). */
export interface GpuTensor {
  readonly name: string;
  /** safetensors dtype name of the GPU bytes: "F8_E4M3", "BF16", "F32", ... */
  readonly dtype: string;
  readonly shape: readonly number[];
  readonly byteLength: number;
}

const EXPERT = /^(model\.layers\.\d+\.mlp\.experts)\.(\d+)\.(.+)$/;
const SCALE_INV = /^(.+)_scale_inv$/;

export interface WeightBuffer<T extends GpuTensor = GpuTensor> {
  /** The buffer's name: the tensor's own, the stacked name for experts, `name[first:end]` for a piece. */
  readonly name: string;
  readonly byteLength: number;
  /** For stacked experts: bytes between consecutive slots. */
  readonly slotBytes?: number;
  /** The tensors (or, for a row piece, the bytes [from, to) of one tensor) at their byte offsets. */
  readonly members: ReadonlyArray<{ tensor: T; offset: number; from?: number; to?: number }>;
  /** A piece of a split tensor or stack `of`: its rows (or experts) first .. first + count - 1. */
  readonly piece?: { readonly of: string; readonly first: number; readonly count: number };
}

export interface PlaceOptions {
  /** The largest buffer a weight may have; default: no limit (nothing is split). */
  maxBufferBytes?: number;
  /** Tensors the forward pass reads in row bands (src/model/weight_split.ts); stacks split always. */
  rowSplittable?: (name: string) => boolean;
  /** The checkpoint, for error messages. */
  where?: string;
}

/** The stacked buffer name of a routed-expert tensor, or undefined for other tensors. */
export function stackedExpertName(name: string): { stacked: string; expert: number } | undefined {
  const m = EXPERT.exec(name);
  return m ? { stacked: `${m[1]}.${m[3]}`, expert: Number(m[2]) } : undefined;
}

/** The size of a buffer for `bytes` of weights (at least 4, a multiple of 4). */
export function weightBufferSize(bytes: number): number {
  return Math.max(4, align4(bytes));
}

/** Bytes of the buffers a placement allocates. */
export function placedBytes(placed: readonly WeightBuffer[]): number {
  return placed.reduce((sum, wb) => sum + weightBufferSize(wb.byteLength), 0);
}

/**
 * Group tensors into GPU buffers, splitting what `maxBufferBytes` cannot hold. Stacked experts must
 * be numbered 0..E-1 with equal shapes (CheckpointError); a buffer that cannot be split small
 * enough is a GpuLimitError naming it.
 */
export function placeTensors<T extends GpuTensor>(tensors: Iterable<T>, options: PlaceOptions = {}): WeightBuffer<T>[] {
  const limit = Math.floor((options.maxBufferBytes ?? Infinity) / 4) * 4;
  const refuse = (what: string, bytes: number, why: string): never => {
    throw new GpuLimitError(
      `${options.where ? `${options.where}: ` : ''}${what} needs a ${mib(bytes)} buffer, over the largest storage binding webmoe plans with (${mib(limit)}: the GPU's maxStorageBufferBindingSize / maxBufferSize, or maxBindingMib); ${why}`,
    );
  };
  const all = [...tensors];
  const byName = new Map(all.map((t) => [t.name, t]));
  const single: WeightBuffer<T>[] = [];
  const stacks = new Map<string, T[]>();
  const rowCuts = new Map<string, number[]>(); // split tensors: first row of each piece, then rows
  for (const t of all) {
    const s = stackedExpertName(t.name);
    if (s) {
      const slots = stacks.get(s.stacked) ?? [];
      slots[s.expert] = t;
      stacks.set(s.stacked, slots);
    } else if (weightBufferSize(t.byteLength) > limit && !SCALE_INV.test(t.name)) {
      if (!options.rowSplittable?.(t.name) || t.shape.length !== 2) refuse(t.name, t.byteLength, 'the kernel that reads it binds it whole');
      const rows = t.shape[0];
      const rowBytes = t.byteLength / rows;
      const step = t.dtype === 'F8_E4M3' ? BLOCK : 1; // FP8 pieces hold whole 128 x 128 scale blocks
      const perPiece = Math.floor(Math.floor(limit / rowBytes) / step) * step;
      if (perPiece < 1) refuse(t.name, t.byteLength, `even ${step} row${step > 1 ? 's' : ''} of it (${mib(step * rowBytes)}) would not fit`);
      const cuts = [];
      for (let r = 0; r < rows; r += perPiece) cuts.push(r);
      rowCuts.set(t.name, [...cuts, rows]);
    }
  }
  for (const t of all) {
    if (stackedExpertName(t.name)) continue;
    const scaled = SCALE_INV.exec(t.name)?.[1];
    const cuts = rowCuts.get(t.name) ?? (scaled !== undefined && byName.has(scaled) ? rowCuts.get(scaled)?.map((r) => Math.ceil(r / BLOCK)) : undefined);
    if (cuts === undefined) {
      if (weightBufferSize(t.byteLength) > limit) refuse(t.name, t.byteLength, 'the kernel that reads it binds it whole');
      single.push({ name: t.name, byteLength: t.byteLength, members: [{ tensor: t, offset: 0 }] });
      continue;
    }
    const rowBytes = t.byteLength / t.shape[0];
    for (let k = 0; k + 1 < cuts.length; k++) {
      const [first, end] = [cuts[k], cuts[k + 1]];
      const [from, to] = [first * rowBytes, end * rowBytes];
      single.push({ name: `${t.name}[${first}:${end}]`, byteLength: to - from, members: [{ tensor: t, offset: 0, from, to }], piece: { of: t.name, first, count: end - first } });
    }
  }

  const stacked: WeightBuffer<T>[] = [];
  const expertCuts = new Map<string, number[]>(); // by the weight's stacked name
  const sortedStacks = [...stacks].sort(([a], [b]) => Number(SCALE_INV.test(a)) - Number(SCALE_INV.test(b))); // weights before their scales
  for (const [name, slots] of sortedStacks) {
    const first = slots[0];
    for (let e = 0; e < slots.length; e++) {
      const t = slots[e];
      if (!t) throw new CheckpointError(`expert ${e} of ${name} is missing (experts must be numbered 0..${slots.length - 1})`);
      if (t.dtype !== first.dtype || t.byteLength !== first.byteLength || t.shape.join() !== first.shape.join()) {
        throw new CheckpointError(`${t.name} is ${t.dtype} [${t.shape}] but expert 0 is ${first.dtype} [${first.shape}]; experts must have equal shapes`);
      }
    }
    const slotBytes = align4(first.byteLength);
    const E = slots.length;
    let cuts = expertCuts.get(SCALE_INV.exec(name)?.[1] ?? '');
    if (cuts === undefined) {
      const perPiece = Math.floor(limit / slotBytes);
      if (perPiece < 1) refuse(`one expert of ${name}`, slotBytes, 'a stack is split by whole experts');
      cuts = [];
      for (let e = 0; e < E; e += perPiece) cuts.push(e);
      cuts.push(E);
      expertCuts.set(name, cuts);
    }
    if (cuts.length === 2) {
      stacked.push({ name, byteLength: slotBytes * E, slotBytes, members: slots.map((tensor, e) => ({ tensor, offset: e * slotBytes })) });
      continue;
    }
    for (let k = 0; k + 1 < cuts.length; k++) {
      const [from, end] = [cuts[k], cuts[k + 1]];
      const members = slots.slice(from, end).map((tensor, i) => ({ tensor, offset: i * slotBytes }));
      stacked.push({ name: `${name}[${from}:${end}]`, byteLength: slotBytes * (end - from), slotBytes, members, piece: { of: name, first: from, count: end - from } });
    }
  }
  return [...single, ...stacked];
}

/**
 * The smallest buffer limit placeTensors accepts for these tensors, and the tensor that sets it:
 * the largest piece that cannot be cut smaller (one expert of a stack, a 128-row block (FP8) or a
 * row of a row-splittable tensor, or a whole tensor the kernels bind whole).
 */
export function smallestBufferLimit(tensors: Iterable<GpuTensor>, options: Pick<PlaceOptions, 'rowSplittable'> = {}): { bytes: number; tensor: string } {
  let floor = { bytes: 4, tensor: '' };
  const all = [...tensors];
  const splittable = new Set(all.filter((t) => !stackedExpertName(t.name) && t.shape.length === 2 && options.rowSplittable?.(t.name)).map((t) => t.name));
  for (const t of all) {
    let unit = t.byteLength;
    const scaled = SCALE_INV.exec(t.name)?.[1];
    if (stackedExpertName(t.name)) {
      unit = align4(t.byteLength);
    } else if (splittable.has(t.name)) {
      const step = t.dtype === 'F8_E4M3' ? BLOCK : 1;
      unit = (Math.min(step, t.shape[0]) * t.byteLength) / t.shape[0];
    } else if (scaled !== undefined && splittable.has(scaled) && t.shape.length === 2) {
      unit = t.byteLength / t.shape[0]; // one block row of scales beside one block of the weight
    }
    if (weightBufferSize(unit) > floor.bytes) floor = { bytes: weightBufferSize(unit), tensor: t.name };
  }
  return floor;
}

function mib(n: number): string {
  return n >= 2 ** 20 ? `${(n / 2 ** 20).toFixed(1)} MiB` : `${n.toLocaleString('en-US')}-byte`;
}
