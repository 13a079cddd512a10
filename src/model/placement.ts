// Where each checkpoint tensor lives on the GPU. Most tensors get a buffer of their own, under
// their checkpoint name. The one re-layout: routed experts are stacked, so that a kernel can
// index one buffer with the router's expert ids on the GPU (no readback, one binding):
//   model.layers.L.mlp.experts.E.P.weight            -> model.layers.L.mlp.experts.P.weight, slot E
//   model.layers.L.mlp.experts.E.P.weight_scale_inv  -> model.layers.L.mlp.experts.P.weight_scale_inv, slot E
// Each slot starts at a 4-byte boundary: slot E is at E * align4(bytes of one expert's tensor).

import { CheckpointError } from '../errors.ts';
import { align4 } from '../gpu/buffers.ts';

/** A tensor as it will be on the GPU (a checkpoint's, or one the loader makes from it). */
export interface GpuTensor {
  readonly name: string;
  /** safetensors dtype name of the GPU bytes: "F8_E4M3", "BF16", "F32", ... */
  readonly dtype: string;
  readonly shape: readonly number[];
  readonly byteLength: number;
}

const EXPERT = /^(model\.layers\.\d+\.mlp\.experts)\.(\d+)\.(.+)$/;

export interface WeightBuffer<T extends GpuTensor = GpuTensor> {
  /** The buffer's name: the tensor's own, or the stacked name for experts. */
  readonly name: string;
  readonly byteLength: number;
  /** For stacked experts: bytes between consecutive slots. */
  readonly slotBytes?: number;
  readonly members: ReadonlyArray<{ tensor: T; offset: number }>;
}

/** The stacked buffer name of a routed-expert tensor, or undefined for other tensors. */
export function stackedExpertName(name: string): { stacked: string; expert: number } | undefined {
  const m = EXPERT.exec(name);
  return m ? { stacked: `${m[1]}.${m[3]}`, expert: Number(m[2]) } : undefined;
}

/** Group tensors into GPU buffers. Stacked experts must be numbered 0..E-1 with equal shapes. */
export function placeTensors<T extends GpuTensor>(tensors: Iterable<T>): WeightBuffer<T>[] {
  const single: WeightBuffer<T>[] = [];
  const stacks = new Map<string, T[]>();
  for (const t of tensors) {
    const s = stackedExpertName(t.name);
    if (!s) {
      single.push({ name: t.name, byteLength: t.byteLength, members: [{ tensor: t, offset: 0 }] });
      continue;
    }
    const slots = stacks.get(s.stacked) ?? [];
    slots[s.expert] = t;
    stacks.set(s.stacked, slots);
  }
  const stacked: WeightBuffer<T>[] = [];
  for (const [name, slots] of stacks) {
    const first = slots[0];
    for (let e = 0; e < slots.length; e++) {
      const t = slots[e];
      if (!t) throw new CheckpointError(`expert ${e} of ${name} is missing (experts must be numbered 0..${slots.length - 1})`);
      if (t.dtype !== first.dtype || t.byteLength !== first.byteLength || t.shape.join() !== first.shape.join()) {
        throw new CheckpointError(`${t.name} is ${t.dtype} [${t.shape}] but expert 0 is ${first.dtype} [${first.shape}]; experts must have equal shapes`);
      }
    }
    const slotBytes = align4(first.byteLength);
    stacked.push({ name, byteLength: slotBytes * slots.length, slotBytes, members: slots.map((tensor, e) => ({ tensor, offset: e * slotBytes })) });
  }
  return [...single, ...stacked];
}
