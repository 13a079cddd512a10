// The figures of a model's expert offload for stats(): counters since load and what each
// layer's cache holds now (src/model/expert_offload.ts).

import type { ExpertOffload } from '../model/expert_offload.ts';
import type { OffloadStats } from './types.ts';

export function offloadStats(offload: ExpertOffload | undefined, residentBytes: number, budgetBytes: number | undefined): OffloadStats | null {
  if (!offload) return null;
  const { hits, misses, uploadedBytes, routeWaitMs } = offload.counters;
  return {
    budgetBytes: budgetBytes ?? null,
    residentBytes,
    hostBytes: offload.hostBytes,
    expertSlots: offload.slots,
    expertHits: hits,
    expertMisses: misses,
    uploadedBytes,
    routeWaitMs,
    layers: [...offload.caches.values()].map((cache) => ({ layer: cache.layer, slots: cache.resident() })),
  };
}
