import { describe, expect, it } from 'vitest';
import { NoWebGPUError } from '../errors.ts';
import { openGpu } from './device.ts';
import { readF32, uploadBuffer } from './buffers.ts';
import { testGpu } from './testing.ts';

describe('openGpu', () => {
  it('refuses a missing navigator.gpu with a typed error', async () => {
    await expect(openGpu({ gpu: undefined })).rejects.toBeInstanceOf(NoWebGPUError);
  });

  it('refuses a GPU with no adapter with a typed error', async () => {
    const gpu = { requestAdapter: async () => null } as unknown as GPU;
    await expect(openGpu({ gpu })).rejects.toThrow(/no GPU adapter/);
  });

  it('opens a device in Node (SwiftShader here) and reports the adapter', async () => {
    const { device, adapter } = await testGpu();
    expect(adapter.limits.maxStorageBufferBindingSize).toBeGreaterThanOrEqual(128 << 20);
    expect(typeof adapter.features['shader-f16']).toBe('boolean');
    const data = new Float32Array([1, 2, 3, -4.5]);
    const buf = uploadBuffer(device, data, 'roundtrip');
    expect(Array.from(await readF32(device, buf, 4))).toEqual([1, 2, 3, -4.5]);
    buf.destroy();
  });

  it('turns a destroyed device into a typed DeviceLostError', async () => {
    const { openNodeGpu } = await import('./node.ts');
    const gpu = await openNodeGpu({ label: 'to-lose' });
    gpu.destroy();
    const err = await gpu.lost;
    expect(err.code).toBe('DEVICE_LOST');
    expect(err.message).toMatch(/Reload the model/);
    expect(gpu.lostError).toBe(err);
  });
});
