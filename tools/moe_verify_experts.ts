// The time of the MTP verify step's experts call (issue 17 item 2: each expert both rows chose
// read once) on this adapter: the decode plans' MoE call (router in the passes, shared experts
// fused, out += the sum) at T = 2 (and 3, 4) with each way of reading the experts
// (moe_experts.ts ExpertReads: per_pair, today's passes; per_expert, each distinct expert and the
// shared experts once) and each router selection (thread, subgroup where the device has it), at the shipped checkpoint's shape and with DeepSeek-V3's router keys at
// reduced widths (V3's own 11 GB of experts do not fit here). Logits whose tokens share about
// half their experts (variant_choice.ts verifyLogits), random ones, and identical rows; the
// overlap printed is the share of token 1's experts token 0 also chose. Each variant's ids,
// weights and out are checked bit for bit against per_pair thread's first. Interleaved rounds, each
// figure the median over rounds of each round's best of RUNS passes of CALLS calls, over CALLS
// (SwiftShader's timestamps tick in 65.5 us steps); bytes by the cost model (moeExpertsCost) at the
// measured overlap. Last, what chooseVerifyExperts picks at each shape, with chooseRouteReduce's selection.
//   npx tsx --import ./tools/register-raw.mjs tools/moe_verify_experts.ts [rounds] [shipped]
import { createStorageBuffer, readF32, readU32, uploadBuffer } from '../src/gpu/buffers.ts';
import { submitPass, type PreparedCall } from '../src/gpu/kernel.ts';
import { openNodeGpu } from '../src/gpu/node.ts';
import { PipelineCache } from '../src/gpu/pipeline_cache.ts';
import { raceCalls } from './race_calls.ts';
import { createMoeExperts, createMoeExpertsScratch, EXPERT_READS, moeExpertsCost, type ExpertReads } from '../src/kernels/moe_experts.ts';
import { ROUTE_REDUCES, type RouteReduce, type RouterConfig } from '../src/kernels/moe_route.ts';
import { chooseRouteReduce, chooseVerifyExperts, memoryVariantStore, verifyLogits } from '../src/kernels/variant_choice.ts';
import { randomExperts, uploadExperts } from '../src/testing/moe_experts_testing.ts';
import { randn, rng } from '../src/testing/random.ts';

const ROUNDS = Number(process.argv[2] ?? 5);
const ONLY = process.argv[3];
const RUNS = 3;
const CALLS = 4;
const gpu = await openNodeGpu();
const { device } = gpu;
const ctx = { gpu, pipelines: new PipelineCache(device) };
console.log(`adapter: ${gpu.adapter.description} (timing ${gpu.adapter.features['timestamp-query'] ? 'timestamps' : 'wall clock'})`);
const next = rng(1);

/** ms per call of each variant (tools/race_calls.ts). */
const race = (calls: PreparedCall[]) => raceCalls(gpu, calls, { rounds: ROUNDS, runs: RUNS, perPass: CALLS });

const v3Keys = (E: number, G: number, KG: number, K: number): RouterConfig => ({ n_routed_experts: E, n_group: G, topk_group: KG, num_experts_per_tok: K, norm_topk_prob: true, routed_scaling_factor: 2.5 });
const SHAPES: { name: string; router: RouterConfig; d: number; I: number }[] = [
  { name: 'shipped E=16 G=4 KG=2 K=4, d=256 I=96', router: v3Keys(16, 4, 2, 4), d: 256, I: 96 },
  { name: 'V3 keys E=256 G=8 KG=4 K=8, d=1024 I=256', router: v3Keys(256, 8, 4, 8), d: 1024, I: 256 },
];

/** The share of token 1's experts that token 0 also chose. */
function overlap(ids: Uint32Array, K: number): number {
  const first = new Set(ids.subarray(0, K));
  return ids.subarray(K, 2 * K).filter((e) => first.has(e)).length / K;
}

for (const { name, router, d, I } of ONLY === 'shipped' ? SHAPES.slice(0, 1) : SHAPES) {
  const E = router.n_routed_experts;
  const K = router.num_experts_per_tok;
  const routed = uploadExperts(device, randomExperts(next, E, d, I, 'fp8'));
  const shared = uploadExperts(device, randomExperts(next, 1, d, I, 'fp8'));
  const bias = uploadBuffer(device, new Float32Array(E), 'bias'); // zero: the logits alone decide the overlap
  const variants: [ExpertReads, RouteReduce][] = ROUTE_REDUCES.filter((r) => r !== 'subgroup' || device.features.has('subgroups')).flatMap((r) => EXPERT_READS.map((e): [ExpertReads, RouteReduce] => [e, r]));
  const kernels = variants.map(([expertReads, routeReduce]) => createMoeExperts(ctx, { expertReads, routeReduce }));
  const half = verifyLogits(router);
  const cases: [string, number, Float32Array][] = [
    ['about half shared', 2, half],
    ['random logits', 2, randn(next, 2 * E, 1.5)],
    ['the same experts', 2, Float32Array.from({ length: 2 * E }, (_, i) => half[i % E])],
    ['random logits', 3, randn(next, 3 * E, 1.5)],
    ['random logits', 4, randn(next, 4 * E, 1.5)],
  ];
  for (const [what, T, logitValues] of cases) {
    const shape = { tokens: T, hidden_size: d, moe_intermediate_size: I, n_routed_experts: E, num_experts_per_tok: K };
    const x = uploadBuffer(device, randn(next, T * d), 'x');
    const logits = uploadBuffer(device, logitValues, 'logits');
    const owned: { destroy(): void }[] = [x, logits];
    const outs: { ids: GPUBuffer; weights: GPUBuffer; out: GPUBuffer }[] = [];
    const calls = kernels.map((kernel) => {
      const scratch = createMoeExpertsScratch(device, shape, 'decode', 'scratch', 1);
      const o = { ids: createStorageBuffer(device, 4 * T * K, 'ids'), weights: createStorageBuffer(device, 4 * T * K, 'weights'), out: uploadBuffer(device, new Float32Array(T * d), 'out') };
      const h = createStorageBuffer(device, 4 * T * I, 'shared_h');
      owned.push(scratch, h, ...Object.values(o));
      outs.push(o);
      return kernel.prepare({
        ...shape, x, topkIds: o.ids, topkWeights: o.weights, weights: routed, scratch, out: o.out, accumulate: true,
        router: { config: router, logits, bias }, shared: { intermediate_size: I, weights: shared, h },
      });
    });
    // one call each from out = 0, compared; then timed (out keeps growing: the same work)
    submitPass(device, ...calls);
    const results = await Promise.all(outs.map(async (o) => [...(await readU32(device, o.ids)), ...new Uint32Array((await readF32(device, o.weights)).buffer), ...new Uint32Array((await readF32(device, o.out)).buffer)].join()));
    const o = T === 2 ? overlap(await readU32(device, outs[0].ids), K) : 0;
    const ms = await race(calls);
    const mib = (reads: ExpertReads) => {
      const routedBytes = moeExpertsCost(shape, 'decode', 'fp8', { reads, overlap: o }).bytes;
      const sharedBytes = moeExpertsCost({ ...shape, n_routed_experts: 1, num_experts_per_tok: 1, moe_intermediate_size: I }, 'decode', 'fp8', { reads }).bytes;
      return (routedBytes + sharedBytes) / 2 ** 20;
    };
    console.log(`moe_experts verify ${name}, T=${T}, ${what}${T === 2 ? ` (overlap ${o.toFixed(2)})` : ''} (ms per call, 2 dispatches; MiB by the cost model${T === 2 ? '' : ' at overlap 0'}):`);
    for (const [i, [reads, reduce]] of variants.entries()) {
      console.log(`  ${`${reads} ${reduce}`.padEnd(20)} ${ms[i].toFixed(3).padStart(8)}   ${mib(reads).toFixed(2)} MiB   ${results[i] === results[0] ? 'same ids, weights and out bits' : 'DIFFERENT'}`);
    }
    for (const b of [...owned, ...calls]) b.destroy();
  }
  const routeReduce = await chooseRouteReduce(ctx, memoryVariantStore(), router);
  const choice = await chooseVerifyExperts(ctx, memoryVariantStore(), { hidden_size: d, moe_intermediate_size: I, shared_intermediate_size: I, router }, { routeReduce });
  console.log(`chooseVerifyExperts ${name} (with chooseRouteReduce's ${routeReduce}): ${choice}`);
  for (const b of [routed, shared, bias]) b.destroy();
}
process.exit(0);
