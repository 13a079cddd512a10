import { beforeAll, describe, expect, it } from 'vitest';
import type { Gpu } from './device.ts';
import { testGpu } from './testing.ts';
import { PipelineCache, pipelineKeyString, type PipelineRecipe } from './pipeline_cache.ts';

let gpu: Gpu;
beforeAll(async () => {
  gpu = await testGpu();
});

// A function: GPUShaderStage exists once Dawn is loaded.
const recipeOf = (): PipelineRecipe => ({
  code: `@group(0) @binding(0) var<storage, read_write> out: array<u32>;
override SIZE: u32 = 1u;
@compute @workgroup_size(SIZE) fn main(@builtin(local_invocation_index) i: u32) { out[i] = i; }`,
  entries: [{ binding: 0, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'storage' } }],
});

describe('PipelineCache', () => {
  it('keys on kernel, variant and constants, whatever their order', () => {
    const a = pipelineKeyString({ kernel: 'k', variant: { weights: 'fp8', strategy: 'row' }, constants: { A: 1, B: 2 } });
    const b = pipelineKeyString({ kernel: 'k', variant: { strategy: 'row', weights: 'fp8' }, constants: { B: 2, A: 1 } });
    expect(a).toBe(b);
    expect(a).toBe('k[strategy=row,weights=fp8]{A=1,B=2}');
    expect(pipelineKeyString({ kernel: 'k', variant: { weights: 'bf16', strategy: 'row' }, constants: { A: 1, B: 2 } })).not.toBe(a);
  });

  it('builds a pipeline once per key and calls the recipe only then', () => {
    const cache = new PipelineCache(gpu.device);
    let built = 0;
    const recipe = () => (built++, recipeOf());
    const first = cache.get({ kernel: 'test', variant: {}, constants: { SIZE: 4 } }, recipe);
    const again = cache.get({ kernel: 'test', variant: {}, constants: { SIZE: 4 } }, recipe);
    const other = cache.get({ kernel: 'test', variant: {}, constants: { SIZE: 8 } }, recipe);
    expect(again).toBe(first);
    expect(other.pipeline).not.toBe(first.pipeline);
    expect(built).toBe(2);
    expect(cache.size).toBe(2);
  });
});
