// The field's baseline on the same adapter and shapes: TensorFlow.js's WebGPU backend matMul in
// f32, on our GPUDevice (so both run on the same adapter in the same process).

import type { Gpu } from '../gpu/device.ts';
import { timeAsync, type Timing } from '../gpu/timing.ts';

export interface MatmulPeer {
  name: string;
  /** Wall-clock median of one matMul of x [M, K] by W [K, N]: submit to GPU done, no readback. */
  time(shape: { M: number; K: number; N: number }, options?: { runs?: number; warmup?: number }): Promise<Timing>;
  dispose(): void;
}

export async function tfjsMatmulPeer(gpu: Gpu): Promise<MatmulPeer> {
  // TF.js checks navigator.gpu before it uses the device it is given; Node has no navigator.
  const g = globalThis as { navigator?: { gpu?: unknown } };
  if (!g.navigator) Object.defineProperty(globalThis, 'navigator', { value: {}, configurable: true, writable: true });
  g.navigator!.gpu ??= {};
  const tf = await import('@tensorflow/tfjs-core');
  const { WebGPUBackend } = await import('@tensorflow/tfjs-backend-webgpu');
  tf.removeBackend('webgpu');
  // Our device, not one TF.js would request: the comparison is on the same adapter.
  tf.registerBackend('webgpu', async () => new WebGPUBackend(gpu.device as never));
  await tf.setBackend('webgpu');
  await tf.ready();
  return {
    name: 'tfjs_webgpu_matmul_f32',
    async time({ M, K, N }, options = {}) {
      const x = tf.randomNormal([M, K]);
      const w = tf.randomNormal([K, N]);
      try {
        const backend = tf.backend() as unknown as { endComputePassEncoder(): void; submitQueue(): void };
        return await timeAsync(async () => {
          const y = tf.matMul(x, w);
          // Submit and wait for the GPU, as our kernels' wall-clock timing does (no readback).
          backend.endComputePassEncoder();
          backend.submitQueue();
          await gpu.device.queue.onSubmittedWorkDone();
          y.dispose();
        }, { warmup: options.warmup ?? 2, runs: options.runs ?? 10 });
      } finally {
        x.dispose();
        w.dispose();
      }
    },
    dispose() {
      tf.removeBackend('webgpu');
    },
  };
}
