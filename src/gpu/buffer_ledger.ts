// Every GPU buffer an engine makes, counted while it lives: weights, latent caches, the plans'
// working buffers and their small uniform buffers alike, so that stats() reports what the engine
// really holds (a session's plans are hundreds of buffers that no budget counted before).

import type { Gpu } from './device.ts';

export interface BufferLedger {
  /** Bytes of the buffers made through the ledger's device and not destroyed yet. */
  readonly liveBytes: number;
  readonly liveBuffers: number;
}

/** `gpu` with a device whose createBuffer is counted; everything else is the device's own. */
export function withBufferLedger(gpu: Gpu): { gpu: Gpu; ledger: BufferLedger } {
  const counts = { liveBytes: 0, liveBuffers: 0 };
  const real = gpu.device;
  const createBuffer = (descriptor: GPUBufferDescriptor): GPUBuffer => {
    const buffer = real.createBuffer(descriptor);
    counts.liveBytes += buffer.size;
    counts.liveBuffers++;
    // Native calls need the real GPUBuffer, so its destroy is patched rather than the buffer wrapped.
    const destroy = buffer.destroy.bind(buffer);
    let destroyed = false;
    buffer.destroy = () => {
      if (!destroyed) {
        destroyed = true;
        counts.liveBytes -= buffer.size;
        counts.liveBuffers--;
      }
      destroy();
    };
    return buffer;
  };
  // Methods bound once, not at every call of a decode step.
  const bound = new Map<PropertyKey, unknown>();
  const device = new Proxy(real, {
    get(target, prop) {
      if (prop === 'createBuffer') return createBuffer;
      const value = Reflect.get(target, prop, target);
      if (typeof value !== 'function') return value;
      let fn = bound.get(prop);
      if (!fn) bound.set(prop, (fn = value.bind(target)));
      return fn;
    },
  });
  const counted: Gpu = {
    device,
    adapter: gpu.adapter,
    lost: gpu.lost,
    get lostError() {
      return gpu.lostError;
    },
    destroy: () => gpu.destroy(),
  };
  return {
    gpu: counted,
    ledger: {
      get liveBytes() {
        return counts.liveBytes;
      },
      get liveBuffers() {
        return counts.liveBuffers;
      },
    },
  };
}
