// The field's baseline on the same adapter and shapes: TensorFlow.js's WebGPU backend matMul in
// f32, on our GPUDevice (so both run on the same adapter in the same process).

import type { Gpu } from '../gpu/device.ts';
import { timeAsync, type Timing } from '../gpu/timing.ts';

/** One matrix product: x [batch, M, K] by W [batch, K, N] (batch 1: a plain matMul). */
export interface MatmulShape {
  M: number;
  K: number;
  N: number;
  batch?: number;
}

export interface MatmulPeer {
  name: string;
  /** Wall-clock median of one matMul of x [M, K] by W [K, N]: submit to GPU done, no readback. */
  time(shape: { M: number; K: number; N: number }, options?: { runs?: number; warmup?: number }): Promise<Timing>;
  /**
   * Wall-clock median of a whole sequence of matMuls (each with its own weights, made once),
   * recorded together and submitted once, as an engine's step would be.
   */
  timeSequence(shapes: readonly MatmulShape[], options?: { runs?: number; warmup?: number }): Promise<Timing>;
  dispose(): void;
}

export async function tfjsMatmulPeer(gpu: Gpu): Promise<MatmulPeer> {
  // TF.js checks navigator.gpu before it uses the device it is given; Node has no navigator.
  const g = globalThis as { navigator?: { gpu?: unknown } };
  if (!g.navigator) Object.defineProperty(globalThis, 'navigator', { value: {}, configurable: true, writable: true });
  g.navigator!.gpu ??= {};
  const tf = await import('@tensorflow/tfjs-core');
  const { WebGPUBackend } = await import('@tensorflow/tfjs-backend-webgpu');
  // The module registers its own factory on import; a previous peer removed it (dispose).
  if (tf.findBackendFactory('webgpu')) tf.removeBackend('webgpu');
  // Our device, not one TF.js would request: the comparison is on the same adapter.
  tf.registerBackend('webgpu', async () => new WebGPUBackend(gpu.device as never));
  await tf.setBackend('webgpu');
  await tf.ready();
  const backend = () => tf.backend() as unknown as { endComputePassEncoder(): void; submitQueue(): void };
  // Submit and wait for the GPU, as our kernels' wall-clock timing does (no readback).
  const finish = async () => {
    backend().endComputePassEncoder();
    backend().submitQueue();
    await gpu.device.queue.onSubmittedWorkDone();
  };
  const operands = (s: MatmulShape) => {
    const batch = s.batch ?? 1;
    return batch === 1 ? [tf.randomNormal([s.M, s.K]), tf.randomNormal([s.K, s.N])] : [tf.randomNormal([batch, s.M, s.K]), tf.randomNormal([batch, s.K, s.N])];
  };
  return {
    name: 'tfjs_webgpu_matmul_f32',
    async timeSequence(shapes, options = {}) {
      const pairs = shapes.map(operands);
      try {
        return await timeAsync(async () => {
          const ys = pairs.map(([x, w]) => tf.matMul(x, w));
          await finish();
          for (const y of ys) y.dispose();
        }, { warmup: options.warmup ?? 1, runs: options.runs ?? 5 });
      } finally {
        for (const t of pairs.flat()) t.dispose();
      }
    },
    async time({ M, K, N }, options = {}) {
      const x = tf.randomNormal([M, K]);
      const w = tf.randomNormal([K, N]);
      try {
        return await timeAsync(async () => {
          const y = tf.matMul(x, w);
          await finish();
          y.dispose();
        }, { warmup: options.warmup ?? 2, runs: options.runs ?? 10 });
      } finally {
        x.dispose();
        w.dispose();
      }
    },
    dispose() {
      if (tf.findBackendFactory('webgpu')) tf.removeBackend('webgpu');
    },
  };
}
