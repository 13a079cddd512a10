// The host-to-GPU upload bandwidth an expert miss sees: queue.writeBuffer of `bytes` from CPU
// memory into a GPU buffer in chunks of `chunkBytes` (one expert's bytes, as ExpertCache uploads
// them), timed from the first write to onSubmittedWorkDone, so the staging copy and the transfer
// both count. The best of a few repetitions: on a shared machine the slower ones are other work.

import { ArgumentError } from '../errors.ts';

export interface UploadBandwidth {
  /** Bytes per second over 1e9, each byte counted once (unlike ceilings.ts's copy, which counts read + write). */
  gbps: number;
  /** The fastest repetition. */
  bestMs: number;
  bytes: number;
  chunkBytes: number;
  runs: number;
}

export interface UploadBandwidthOptions {
  /** Bytes uploaded per repetition (a positive multiple of 4, at most maxBufferSize). */
  bytes: number;
  /** Bytes per writeBuffer (a positive multiple of 4). */
  chunkBytes: number;
  /** Timed repetitions after one warm-up (default 3). */
  runs?: number;
}

export async function measureUploadBandwidth(device: GPUDevice, options: UploadBandwidthOptions): Promise<UploadBandwidth> {
  const { bytes, chunkBytes } = options;
  const runs = options.runs ?? 3;
  // writeBuffer wants sizes and offsets in multiples of 4.
  const multipleOf4 = (n: number) => Number.isSafeInteger(n) && n > 0 && n % 4 === 0;
  if (!multipleOf4(bytes)) throw new ArgumentError(`upload bandwidth: bytes must be a positive multiple of 4, got ${bytes}`);
  if (!multipleOf4(chunkBytes)) throw new ArgumentError(`upload bandwidth: chunkBytes must be a positive multiple of 4, got ${chunkBytes}`);
  if (bytes > device.limits.maxBufferSize) throw new ArgumentError(`upload bandwidth: ${bytes} bytes is over the device's maxBufferSize (${device.limits.maxBufferSize})`);
  if (!(Number.isInteger(runs) && runs >= 1)) throw new ArgumentError(`upload bandwidth: runs must be a positive integer, got ${runs}`);
  // Non-zero bytes, so that no layer can skip the copy of a zeroed source.
  const host = new Uint8Array(bytes);
  for (let i = 0; i < bytes; i += 4096) host[i] = ((i >>> 12) & 0xff) | 1;
  const target = device.createBuffer({ label: 'upload bandwidth', size: bytes, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });
  try {
    let best = Infinity;
    for (let r = 0; r < runs + 1; r++) {
      await device.queue.onSubmittedWorkDone();
      const started = performance.now();
      uploadInChunks(device, target, host, chunkBytes);
      await device.queue.onSubmittedWorkDone();
      const ms = performance.now() - started;
      if (r > 0) best = Math.min(best, ms); // the first warms the staging path
    }
    return { gbps: bytes / (best * 1e6), bestMs: best, bytes, chunkBytes, runs };
  } finally {
    target.destroy();
  }
}

/** Queues `host` into `target` from offset 0, one writeBuffer per `chunkBytes` (the last one shorter when they do not divide). */
export function uploadInChunks(device: GPUDevice, target: GPUBuffer, host: Uint8Array<ArrayBuffer>, chunkBytes: number): void {
  for (let at = 0; at < host.byteLength; at += chunkBytes) device.queue.writeBuffer(target, at, host, at, Math.min(chunkBytes, host.byteLength - at));
}
