// The demo's memory-plan lines for the shipped checkpoint against a GPU's limits, from the same
// report `webmoe inspect` prints (headers only).

import { describe, expect, it } from 'vitest';
import { nodeDir } from '../../io/node_source.ts';
import { inspectCheckpoint } from '../../model/inspect.ts';
import { REPO_ROOT } from '../../testing/fixtures.ts';
import { describePlan } from './memory_plan.ts';

const MiB = 2 ** 20;
const shipped = (binding: number) => inspectCheckpoint(nodeDir(`${REPO_ROOT}/public/models/webmoe-kjv-12m`), { bindingLimitBytes: binding });

describe('describePlan', () => {
  it('says what one conversation needs and that it fits a GPU with room', async () => {
    const report = await shipped(128 * MiB);
    const plan = report.memory_plan.fp8!;
    const { fits, lines } = describePlan(report, { maxBufferSize: 4096 * MiB, maxStorageBufferBindingSize: 128 * MiB });
    expect(fits).toBe(true);
    const text = Object.fromEntries(lines);
    expect(text['Needs on the GPU']).toMatch(/^\d+\.\d MiB for one conversation of 1,024 positions: weights 23\.5 MiB \(FP8\) \+ latent cache /);
    expect(plan.oneSessionBytes).toBe(plan.weightBytes + plan.sessionCacheBytes + plan.activationBytes);
    expect(text['This GPU’s limits']).toBe('buffers up to 4.0 GiB, bindings up to 128.0 MiB: no tensor needs splitting');
    expect(text['Latent cache']).toMatch(/one buffer of this GPU holds [\d,]+ positions$/);
    expect(text['Least on the GPU']).toMatch(/^[\d.]+ MiB with the routed experts in CPU memory \([\d.]+ MiB\) and one per layer on the GPU/);
    expect(report.memory_plan.offloaded!.oneSessionBytes).toBeLessThan(plan.oneSessionBytes);
  });

  it('says when the latent cache is over the largest buffer, and how many positions would fit', async () => {
    const report = await shipped(128 * MiB);
    const cache = report.memory_plan.fp8!.sessionCacheBytes;
    const { fits, lines } = describePlan(report, { maxBufferSize: cache / 2, maxStorageBufferBindingSize: 128 * MiB });
    expect(fits).toBe(false);
    expect(Object.fromEntries(lines)['Latent cache']).toMatch(/is over this GPU’s largest buffer: at most 51[12] positions fit$/);
  });

  it('counts the tensors split at a small binding', async () => {
    const report = await shipped(2 * MiB);
    const { lines } = describePlan(report, { maxBufferSize: 4096 * MiB, maxStorageBufferBindingSize: 2 * MiB });
    expect(Object.fromEntries(lines)['This GPU’s limits']).toMatch(/bindings up to 2\.0 MiB: \d+ tensors? split into \d+ pieces to fit$/);
  });
});
