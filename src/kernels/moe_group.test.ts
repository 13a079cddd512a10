// moe_group on the GPU (SwiftShader here) against groupByExpertRef, exactly: offsets and the
// sorted pairs (expert order, ascending pair within an expert) for random routings with experts
// chosen by no token and by every token, more experts than the workgroup has invocations, and
// outputs poisoned before the run.

import { describe, expect, it } from 'vitest';
import { ArgumentError } from '../errors.ts';
import { readU32, uploadBuffer } from '../gpu/buffers.ts';
import { rng, testGpu, testKernelContext, testSeed } from '../gpu/testing.ts';
import { groupByExpertRef } from './moe_experts.ref.ts';
import { randomRouting } from '../testing/moe_experts_testing.ts';
import { createMoeGroup } from './moe_group.ts';
import { submitPass } from '../gpu/kernel.ts';

const POISON = 0xdeadbeef;

async function groupOnGpu(ids: Uint32Array, experts: number): Promise<{ offsets: Uint32Array; sortedPairs: Uint32Array }> {
  const { device } = await testGpu();
  const pairs = ids.length;
  const idsBuf = uploadBuffer(device, ids, 'topk_ids');
  const offsetsBuf = uploadBuffer(device, new Uint32Array(experts + 1).fill(POISON), 'expert_offsets');
  const sortedBuf = uploadBuffer(device, new Uint32Array(pairs).fill(POISON), 'sorted_pairs');
  device.pushErrorScope('validation');
  const op = createMoeGroup(await testKernelContext()).prepare({ pairs, experts, topkIds: idsBuf, expertOffsets: offsetsBuf, sortedPairs: sortedBuf });
  submitPass(device, op);
  expect((await device.popErrorScope())?.message).toBeUndefined();
  const result = { offsets: await readU32(device, offsetsBuf, experts + 1), sortedPairs: await readU32(device, sortedBuf, pairs) };
  for (const b of [idsBuf, offsetsBuf, sortedBuf]) b.destroy();
  op.destroy();
  return result;
}

describe('moe_group', () => {
  it.each([
    { tokens: 1, topk: 6, experts: 12 },
    { tokens: 7, topk: 6, experts: 12 },
    { tokens: 33, topk: 4, experts: 16 },
    // more experts than the 256 invocations: each owns two
    { tokens: 40, topk: 8, experts: 300 },
  ])('matches the reference exactly ($tokens tokens, top-$topk of $experts)', async ({ tokens, topk, experts }) => {
    const next = rng(testSeed(`moe_group ${tokens} ${topk} ${experts}`));
    const ids = randomRouting(next, tokens, topk, experts);
    const want = groupByExpertRef(ids, experts);
    const got = await groupOnGpu(ids, experts);
    expect(Array.from(got.offsets)).toEqual(Array.from(want.offsets));
    expect(Array.from(got.sortedPairs)).toEqual(Array.from(want.sortedPairs));
    // the routing's shape shows in the counts: the hot expert has every token, the cold ones none
    expect(got.offsets[3] - got.offsets[2]).toBe(tokens);
    expect(got.offsets[1] - got.offsets[0]).toBe(0);
    expect(got.offsets[experts] - got.offsets[experts - 1]).toBe(0);
  });

  it('keeps token order within an expert when a token repeats an expert', async () => {
    const ids = new Uint32Array([1, 1, 0, 1, 2, 0]); // T = 3, topk = 2
    const got = await groupOnGpu(ids, 3);
    expect(Array.from(got.offsets)).toEqual([0, 2, 5, 6]);
    expect(Array.from(got.sortedPairs)).toEqual([2, 5, 0, 1, 3, 4]);
  });

  it('rejects buffers that are too small', async () => {
    const { device } = await testGpu();
    const b = uploadBuffer(device, new Uint32Array(4), 'b');
    const args = { pairs: 4, experts: 4, topkIds: b, expertOffsets: b, sortedPairs: b };
    const group = createMoeGroup(await testKernelContext());
    expect(() => group.prepare(args)).toThrow(ArgumentError);
    expect(() => group.prepare(args)).toThrow(/expertOffsets holds 16 bytes, needs 20/);
    b.destroy();
  });
});
