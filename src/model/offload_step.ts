// Drives a step's recording (layer.ts StepRecord) through its offloaded MoE layers: at each one
// the work so far is submitted with a copy of the router's ids, the ids are read back (the one
// small readback per offloaded layer), the layer's cache makes the experts resident pass by pass
// (uploads queued before the pass that reads them) and the recording goes on in a fresh encoder.
// A step whose experts are all resident records in one go, as before.

import { ArgumentError } from '../errors.ts';
import type { OffloadPoint, Recording, StepRecord } from './layer.ts';

/** Records a step that never stops (every expert resident); ArgumentError for an offloaded one. */
export function recordAll(steps: StepRecord): void {
  const first = steps.next();
  if (!first.done) {
    steps.return();
    throw new ArgumentError('this model offloads its experts: a step reads the router back mid-way and cannot be recorded into one encoder; use run()');
  }
}

/** Records and submits a step through its offload points; `rec.encoder` holds the rest when it returns. */
export async function recordThrough(device: GPUDevice, rec: Recording, steps: StepRecord, staging: GPUBuffer): Promise<void> {
  try {
    for (let point = steps.next(); !point.done; point = steps.next()) await runOffloaded(device, rec, point.value, staging);
  } finally {
    steps.return();
  }
}

async function runOffloaded(device: GPUDevice, rec: Recording, { experts, acts }: OffloadPoint, staging: GPUBuffer): Promise<void> {
  const bytes = 4 * experts.pairs;
  rec.encoder.copyBufferToBuffer(acts.topkIds, 0, staging, 0, bytes);
  device.queue.submit([rec.encoder.finish()]);
  // The shared experts need no routing: the GPU runs them while the ids come back.
  if (experts.shared) {
    const encoder = device.createCommandEncoder({ label: `layer${experts.cache.layer}.shared_experts` });
    const pass = encoder.beginComputePass({ label: `layer${experts.cache.layer}.shared_experts` });
    experts.shared.encode(pass);
    pass.end();
    device.queue.submit([encoder.finish()]);
  }
  const waited = performance.now();
  await staging.mapAsync(GPUMapMode.READ, 0, bytes);
  const ids = new Uint32Array(staging.getMappedRange(0, bytes).slice(0));
  staging.unmap();
  const { cache } = experts;
  cache.counters.routeWaitMs += performance.now() - waited;
  // Each pass's uploads are queued by the cache before its slot ids: the queue runs them in order.
  // A pass is submitted before the next one's uploads; the last goes with the rest of the step.
  rec.encoder = device.createCommandEncoder({ label: `after layer${cache.layer}.experts` });
  for await (const { slotIds, last } of cache.passes(ids)) {
    device.queue.writeBuffer(acts.topkSlots, 0, slotIds);
    const encoder = last ? rec.encoder : device.createCommandEncoder({ label: `layer${cache.layer}.experts pass` });
    const pass = encoder.beginComputePass({ label: `layer${cache.layer}.experts` });
    experts.pass.encode(pass);
    pass.end();
    if (!last) device.queue.submit([encoder.finish()]);
  }
}
