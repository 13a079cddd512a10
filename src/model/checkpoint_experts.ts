// Offloaded experts read from the checkpoint when a cache slot takes them, instead of held in CPU
// memory (expert_offload.ts's HostExperts): for a model whose experts fit neither the GPU nor the
// CPU's memory. Each miss reads the expert's tensors (its three projections and, for FP8, their
// block scales) from their files (ByteSource.read: a Node file, a URL by Range requests, the
// browser's shard cache), as stored: FP8 codes, or BF16 kept as BF16. A BF16 release held as FP8
// would need quantising on every read, so it is refused here (hold those experts in memory).

import { CheckpointError, UnsupportedConfigError } from '../errors.ts';
import type { TensorInfo } from '../io/safetensors.ts';
import type { ByteSource } from '../io/sources.ts';
import { checkedForFinite, finiteChecking } from './finite_check.ts';
import { PROJECTIONS, type ExpertBytes, type ExpertStore, type OffloadLayout, type StackInfo } from './expert_offload.ts';

/** The layout's experts as stores reading `tensors` (by onGpu name) from `sources` (by file). */
export function checkpointExperts(layout: OffloadLayout, tensors: ReadonlyMap<string, TensorInfo>, sources: ReadonlyMap<string, ByteSource>, signal?: AbortSignal): Map<number, ExpertStore> {
  const out = new Map<number, ExpertStore>();
  for (const [layer, byName] of layout.stacks) {
    const prefix = `model.layers.${layer}.mlp.experts.`;
    const info = (name: string): StackInfo | undefined => {
      const s = byName.get(name);
      return s && { name, slotBytes: s.slotBytes, experts: s.experts };
    };
    const stacks = Object.fromEntries(PROJECTIONS.map((p) => [p, { weight: info(`${prefix}${p}.weight`)!, scale: info(`${prefix}${p}.weight_scale_inv`) }])) as ExpertStore['stacks'];
    const experts = stacks.gate_proj.weight.experts;
    const expertBytes = PROJECTIONS.reduce((sum, p) => sum + stacks[p].weight.slotBytes + (stacks[p].scale?.slotBytes ?? 0), 0);
    /** Expert e's tensor of a stack, read into a zero-padded slot. */
    const slot = async (stack: StackInfo, e: number): Promise<Uint8Array<ArrayBuffer>> => {
      const name = stack.name.replace(prefix, `${prefix}${e}.`);
      const t = tensors.get(name);
      if (!t) throw new CheckpointError(`${name} is not in the checkpoint`);
      const bytes = await sources.get(t.file)!.read(t.byteOffset, t.byteLength, signal);
      // the block scales are checked as the loader checks them (a NaN would poison every token)
      if (checkedForFinite(t)) finiteChecking(t, t.file, { write() {}, finish() {} }).write(bytes, 0);
      const out = new Uint8Array(stack.slotBytes);
      out.set(bytes);
      return out;
    };
    out.set(layer, {
      layer, experts, stacks, expertBytes, hostBytes: 0,
      async read(e) {
        const parts = await Promise.all(PROJECTIONS.map(async (p) => ({ weight: await slot(stacks[p].weight, e), scale: stacks[p].scale && (await slot(stacks[p].scale!, e)) })));
        return Object.fromEntries(PROJECTIONS.map((p, i) => [p, parts[i]])) as ExpertBytes;
      },
    });
  }
  return out;
}

/** Refuses, before anything is allocated, expert tensors that would need quantising at each read. */
export function checkReadableExperts(offloaded: readonly { name: string }[], toQuantise: ReadonlySet<{ name: string }>, where: string): void {
  const names = new Set(offloaded.map((t) => t.name));
  for (const t of toQuantise) {
    if (names.has(t.name)) {
      throw new UnsupportedConfigError('weights', `${where}: ${t.name} is stored unquantised and held as FP8; experts read from the checkpoint at each miss must be held as they are stored (an FP8 release, or weights 'bf16'), or kept in CPU memory (expertStore 'memory')`);
    }
  }
}
