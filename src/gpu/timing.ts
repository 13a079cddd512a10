// Timing of GPU work for the benchmarks: GPU timestamps around one compute pass where the adapter
// has 'timestamp-query', else the wall clock from submit to onSubmittedWorkDone (which includes
// the submit overhead, so it is an upper bound). Medians, after warm-up.

import type { Gpu } from './device.ts';

export interface Timing {
  /** GPU time where timestamps exist, else wall clock. */
  medianMs: number;
  /** Wall clock from submit to done: what a peer timed from outside is compared with. */
  wallMedianMs: number;
  minMs: number;
  runs: number;
  method: 'timestamp' | 'wall';
}

export interface TimeOptions {
  warmup?: number;
  runs?: number;
}

/** Time `record`, which records its dispatches into one compute pass. */
export async function timeComputePass(gpu: Gpu, record: (pass: GPUComputePassEncoder) => void, options: TimeOptions = {}): Promise<Timing> {
  const { device } = gpu;
  const warmup = options.warmup ?? 2;
  const runs = options.runs ?? 10;
  const useTimestamps = gpu.adapter.features['timestamp-query'];
  const querySet = useTimestamps ? device.createQuerySet({ type: 'timestamp', count: 2 }) : undefined;
  const resolve = useTimestamps ? device.createBuffer({ size: 16, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC }) : undefined;
  const readback = useTimestamps ? device.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST }) : undefined;
  const samples: number[] = [];
  const wall: number[] = [];
  try {
    for (let i = 0; i < warmup + runs; i++) {
      const encoder = device.createCommandEncoder({ label: 'bench' });
      const pass = encoder.beginComputePass(querySet ? { timestampWrites: { querySet, beginningOfPassWriteIndex: 0, endOfPassWriteIndex: 1 } } : {});
      record(pass);
      pass.end();
      if (querySet && resolve && readback) {
        encoder.resolveQuerySet(querySet, 0, 2, resolve, 0);
        encoder.copyBufferToBuffer(resolve, 0, readback, 0, 16);
      }
      const started = performance.now();
      device.queue.submit([encoder.finish()]);
      await device.queue.onSubmittedWorkDone();
      const wallMs = performance.now() - started;
      let ms = wallMs;
      if (readback) {
        await readback.mapAsync(GPUMapMode.READ);
        const [begin, end] = new BigUint64Array(readback.getMappedRange().slice(0));
        readback.unmap();
        // A zero or backwards pair means the adapter quantised the timestamps away: keep the wall clock.
        if (end > begin) ms = Number(end - begin) / 1e6;
      }
      if (i >= warmup) {
        samples.push(ms);
        wall.push(wallMs);
      }
    }
  } finally {
    querySet?.destroy();
    resolve?.destroy();
    readback?.destroy();
  }
  return { ...summarize(samples, useTimestamps ? 'timestamp' : 'wall'), wallMedianMs: median(wall) };
}

/** Time an async operation by the wall clock (peers whose work we cannot put in our pass). */
export async function timeAsync(run: () => Promise<void>, options: TimeOptions = {}): Promise<Timing> {
  const warmup = options.warmup ?? 2;
  const runs = options.runs ?? 10;
  const samples: number[] = [];
  for (let i = 0; i < warmup + runs; i++) {
    const started = performance.now();
    await run();
    if (i >= warmup) samples.push(performance.now() - started);
  }
  return summarize(samples, 'wall');
}

/** The median of samples (the mean of the middle two for an even count). */
export function median(samples: number[]): number {
  const sorted = [...samples].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

function summarize(samples: number[], method: Timing['method']): Timing {
  const medianMs = median(samples);
  return { medianMs, wallMedianMs: medianMs, minMs: Math.min(...samples), runs: samples.length, method };
}
