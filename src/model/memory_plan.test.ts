// The memory plan from the headers alone: its weight bytes are what the loader allocates, its plan
// bytes what createActivations allocates, and checkMemoryPlan refuses what cannot run with the
// advice that would fit, exactly (the advised context passes, one more position does not).

import { describe, expect, it } from 'vitest';
import { parseConfig } from '../config.ts';
import { GpuLimitError, GpuOutOfMemoryError } from '../errors.ts';
import { testGpu } from '../gpu/testing.ts';
import { openCheckpoint } from '../io/checkpoint_files.ts';
import { memoryDir } from '../io/sources.ts';
import { generateCheckpoint } from '../../tools/checkpoint/generate.ts';
import { ODD } from '../../tools/checkpoint/presets.ts';
import { activationBytes, createActivations } from './activations.ts';
import { loadWeights, type WeightMode } from './load_weights.ts';
import { checkMemoryPlan, expertSlotsFor, planMemory, type MemoryPlan } from './memory_plan.ts';
import { trackingDevice } from '../testing/tracking_device.ts';

const RAW = { ...ODD, quantization_config: null };
const dir = memoryDir('odd-bf16', Object.fromEntries(generateCheckpoint({ config: RAW, seed: 4 }).files));
const config = parseConfig(RAW);
const MiB = 2 ** 20;

async function plan(weights: WeightMode, overrides: Partial<Parameters<typeof planMemory>[0]> = {}): Promise<MemoryPlan> {
  const checkpoint = await openCheckpoint(dir);
  return planMemory({
    config, tensors: [...checkpoint.tensors.values()], weights, maxContext: 256, prefillChunk: 64, cacheBudgetBytes: 512 * MiB, bindingLimit: 2 ** 30, maxBufferSize: 2 ** 30, ...overrides,
  });
}

describe('planMemory', () => {
  it('counts the weight bytes the loader allocates, in both modes and split at a binding limit', async () => {
    const gpu = await testGpu();
    for (const [weights, maxBindingBytes] of [['fp8', undefined], ['bf16', undefined], ['bf16', 130_000], ['fp8', 61_000]] as const) {
      const planned = await plan(weights, maxBindingBytes ? { bindingLimit: maxBindingBytes } : {});
      const loaded = await loadWeights(gpu, dir, { weights, maxBindingBytes });
      try {
        expect(planned.weightBytes, `${weights} at ${maxBindingBytes}`).toBe(loaded.bytesOnGpu);
        expect(planned.weightPieces).toBe([...loaded.placement.values()].filter((wb) => wb.piece).length);
        if (maxBindingBytes) expect(planned.weightPieces).toBeGreaterThan(0);
      } finally {
        loaded.destroy();
      }
    }
  });

  it('counts the bytes of the buffers createActivations makes', async () => {
    const gpu = await testGpu();
    for (const [rows, ranges] of [[1, 1], [2, 3], [64, 1]] as const) {
      const { device, made } = trackingDevice(gpu.device);
      const sizes: number[] = [];
      const counting = new Proxy(device, { get: (t, p) => (p === 'createBuffer' ? (d: GPUBufferDescriptor) => (sizes.push(d.size), t.createBuffer(d)) : Reflect.get(t, p)) });
      createActivations(counting, config, rows, 'act', ranges).destroy();
      expect(made.every((b) => b.destroyed)).toBe(true);
      const want = Object.values(activationBytes(config, rows, ranges));
      expect(sizes.reduce((a, b) => a + b, 0), `${rows} rows, ${ranges} ranges`).toBe(want.reduce((a, b) => a + b, 0));
    }
  });
});

describe('planMemory with the experts offloaded', () => {
  it('counts the GPU caches the loader allocates, and the CPU stacks beside them', async () => {
    const gpu = await testGpu();
    for (const [weights, expertSlots] of [['fp8', 1], ['bf16', 4], ['fp8', 6]] as const) {
      const planned = await plan(weights, { expertSlots });
      const loaded = await loadWeights(gpu, dir, { weights, expertSlots });
      try {
        expect(planned.weightBytes, `${weights} at ${expertSlots} slots`).toBe(loaded.bytesOnGpu);
        expect(planned.offload).toEqual({ expertSlots, cacheBytes: loaded.offload!.cacheBytes, hostBytes: loaded.offload!.hostBytes });
      } finally {
        loaded.destroy();
      }
    }
    // all six experts of each of the 3 MoE layers (2 + MTP) in CPU memory: more than the cache of 1
    const one = await plan('fp8', { expertSlots: 1 });
    expect(one.offload!.hostBytes).toBe(6 * one.offload!.cacheBytes);
  });

  it('expertSlotsFor takes the most slots whose plan is within the budget', async () => {
    const input = { config, tensors: [...(await openCheckpoint(dir)).tensors.values()], weights: 'fp8' as const, maxContext: 256, prefillChunk: 64, cacheBudgetBytes: 512 * MiB, bindingLimit: 2 ** 30, maxBufferSize: 2 ** 30 };
    const at = async (expertSlots: number) => (await plan('fp8', { expertSlots })).oneSessionBytes;
    expect(expertSlotsFor(input, await at(3))).toBe(3);
    expect(expertSlotsFor(input, (await at(4)) - 1)).toBe(3);
    expect(expertSlotsFor(input, await at(6))).toBe(6);
    expect(expertSlotsFor(input, (await at(1)) - 1)).toBeUndefined();
    // a binding limit under two slots' cache buffer holds one
    expect(expertSlotsFor({ ...input, bindingLimit: 40_000 }, 2 ** 30)).toBe(1);
  });
});

describe('checkMemoryPlan', () => {
  it('refuses a budget the model does not fit, advising the longest context that does, exactly', async () => {
    const full = await plan('fp8');
    const budget = (await plan('fp8', { maxContext: 100 })).oneSessionBytes + 10; // room for 100 positions, not 101
    const error = (() => {
      try {
        checkMemoryPlan(full, { bindingLimit: 2 ** 30, maxBufferSize: 2 ** 30, budgetBytes: budget }, 'odd');
      } catch (e) {
        return e as Error;
      }
    })();
    expect(error).toBeInstanceOf(GpuOutOfMemoryError);
    expect(error!.message).toMatch(/odd: the model needs [\d.]+ MiB on the GPU \(weights [\d.]+ MiB \(fp8\), a session's latent cache [\d.]+ MiB, plans [\d.]+ MiB\), over the budget of [\d.]+ MiB; what would fit: a context of 100 positions/);
    const limits = { bindingLimit: 2 ** 30, maxBufferSize: 2 ** 30, budgetBytes: budget };
    const [fits, over] = [await plan('fp8', { maxContext: 100 }), await plan('fp8', { maxContext: 101 })];
    expect(() => checkMemoryPlan(fits, limits, 'odd')).not.toThrow();
    expect(() => checkMemoryPlan(over, limits, 'odd')).toThrow(GpuOutOfMemoryError);
  });

  it("advises weights 'fp8' when a BF16 release kept bf16 does not fit and quantised would", async () => {
    const bf16 = await plan('bf16');
    const fp8 = await plan('fp8');
    const budget = Math.floor((bf16.weightBytes + bf16.activationBytes + fp8.oneSessionBytes) / 2);
    expect(fp8.oneSessionBytes).toBeLessThan(budget);
    expect(() => checkMemoryPlan(bf16, { bindingLimit: 2 ** 30, maxBufferSize: 2 ** 30, budgetBytes: budget }, 'odd', fp8)).toThrow(/what would fit: .*weights 'fp8' \(--weights fp8: [\d.]+ MiB in all\)/);
  });

  it('refuses a latent cache over the largest buffer and a working buffer over the binding limit, saying what fits', async () => {
    const p = await plan('fp8');
    const maxBufferSize = (await plan('fp8', { maxContext: 50 })).sessionCacheBytes;
    expect(() => checkMemoryPlan(p, { bindingLimit: 2 ** 30, maxBufferSize }, 'odd')).toThrow(GpuLimitError);
    expect(() => checkMemoryPlan(p, { bindingLimit: 2 ** 30, maxBufferSize }, 'odd')).toThrow(/a context of at most 50 positions fits/);
    const wide = await plan('fp8', { prefillChunk: 512 }); // moe.y: 512 rows x 3 experts x 200 f32
    expect(() => checkMemoryPlan(wide, { bindingLimit: 512 * 301 * 4 - 4, maxBufferSize: 2 ** 30 }, 'odd')).toThrow(/the moe\.y of a 512-row plan needs [\d.]+ MiB, over the largest storage binding .* use a smaller prefillChunk/);
  });
});
