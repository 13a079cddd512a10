// A quick check that this adapter computes what the CPU reference does: one RMSNorm over odd
// shapes on random data. The demo page runs it after opening the GPU, so a broken driver shows
// up as a message, not as wrong text later.

import { readF32, uploadBuffer, createStorageBuffer } from '../gpu/buffers.ts';
import type { Gpu } from '../gpu/device.ts';
import { PipelineCache } from '../gpu/pipeline_cache.ts';
import { createRmsNorm } from './rmsnorm.ts';
import { rmsNormRef } from './rmsnorm.ref.ts';
import { submitPass } from '../gpu/kernel.ts';

export interface SelfCheckResult {
  kernel: string;
  shape: { rows: number; width: number };
  /** ‖gpu − cpu‖ / ‖cpu‖ */
  relError: number;
  ok: boolean;
}

export async function selfCheck(gpu: Gpu, pipelines = new PipelineCache(gpu.device)): Promise<SelfCheckResult> {
  const { device } = gpu;
  const rows = 7;
  const width = 301;
  const x = new Float32Array(rows * width);
  const weight = new Float32Array(width);
  // A fixed, cheap pseudo-random pattern: the check must be repeatable.
  for (let i = 0; i < x.length; i++) x[i] = Math.sin(i * 12.9898) * 3.5;
  for (let j = 0; j < width; j++) weight[j] = 1 + 0.1 * Math.cos(j * 78.233);
  const want = new Float32Array(rows * width);
  rmsNormRef({ rows, width, eps: 1e-6, x, weight, y: want });

  const xBuf = uploadBuffer(device, x, 'self-check.x');
  const wBuf = uploadBuffer(device, weight, 'self-check.weight');
  const yBuf = createStorageBuffer(device, 4 * rows * width, 'self-check.y');
  const op = createRmsNorm({ gpu, pipelines }).prepare({ rows, width, eps: 1e-6, x: xBuf, weight: wBuf, y: yBuf });
  try {
    submitPass(device, op);
    const got = await readF32(device, yBuf, rows * width);
    let num = 0;
    let den = 0;
    for (let i = 0; i < want.length; i++) {
      num += (got[i] - want[i]) ** 2;
      den += want[i] ** 2;
    }
    const relError = Math.sqrt(num / den);
    return { kernel: 'rmsnorm', shape: { rows, width }, relError, ok: relError < 1e-5 };
  } finally {
    op.destroy();
    for (const b of [xBuf, wBuf, yBuf]) b.destroy();
  }
}
