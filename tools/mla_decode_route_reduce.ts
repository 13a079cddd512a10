// The time of one call per reduction on this adapter (issue 19 item 2, the last reductions): MLA
// decode attention (thread, workgroup, subgroup; one query row at 37, 256 and 1000 cache positions:
// one split, a full one, and 4 merged by pass 2) at the shipped checkpoint's widths and
// DeepSeek-V3's, and the router's selection (thread, subgroup) in moe_route (1 token: a decode
// step; 64: a prefill chunk) and inside the decode experts' two passes (decode_route, 1 token,
// the shared experts fused) with the shipped checkpoint's router keys and V3's. The benchmark's
// timing (timeComputePass: GPU timestamps where the adapter has them); variants in interleaved
// rounds, each figure the median over rounds of each round's best of RUNS passes of CALLS calls,
// divided by CALLS (SwiftShader's timestamps tick in 65.5 us steps). Each variant's output is
// checked against the thread variant's first (within 1e-5 for attention, bit for bit for the
// router). Last, what chooseMlaDecodeReduce and chooseRouteReduce pick here.
//   npx tsx --import ./tools/register-raw.mjs tools/mla_decode_route_reduce.ts [rounds] [mla | route | shipped]
// (mla: the attention only, route: the router only, shipped: both at the shipped checkpoint's widths only)
import { createStorageBuffer, readF32, readU32, uploadBuffer } from '../src/gpu/buffers.ts';
import { submitPass, type PreparedCall } from '../src/gpu/kernel.ts';
import { openNodeGpu } from '../src/gpu/node.ts';
import { PipelineCache } from '../src/gpu/pipeline_cache.ts';
import { raceCalls } from './race_calls.ts';
import { kvBBytes } from '../src/kernels/mla_absorb.ts';
import { createMlaDecode, MLA_DECODE_REDUCES, type MlaDecodeReduce } from '../src/kernels/mla_decode.ts';
import { createMoeExperts, createMoeExpertsScratch } from '../src/kernels/moe_experts.ts';
import { createMoeRoute, ROUTE_REDUCES, type RouteReduce, type RouterConfig } from '../src/kernels/moe_route.ts';
import { chooseMlaDecodeReduce, chooseRouteReduce, memoryVariantStore } from '../src/kernels/variant_choice.ts';
import { randomExperts, uploadExperts } from '../src/testing/moe_experts_testing.ts';
import { randn, rng } from '../src/testing/random.ts';

const ROUNDS = Number(process.argv[2] ?? 5);
const ONLY = process.argv[3];
const RUNS = 3;
const CALLS = 4;
const gpu = await openNodeGpu();
const { device } = gpu;
const ctx = { gpu, pipelines: new PipelineCache(device) };
const info = device.adapterInfo;
const subgroups = device.features.has('subgroups');
console.log(`adapter: ${gpu.adapter.description} (subgroups ${subgroups}, sizes ${info.subgroupMinSize}..${info.subgroupMaxSize}, timing ${gpu.adapter.features['timestamp-query'] ? 'timestamps' : 'wall clock'})`);
const next = rng(1);

/** ms per call of each variant (tools/race_calls.ts). */
const race = (calls: PreparedCall[]) => raceCalls(gpu, calls, { rounds: ROUNDS, runs: RUNS, perPass: CALLS });

function maxRel(got: Float32Array, want: Float32Array): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < want.length; i++) {
    num += (got[i] - want[i]) ** 2;
    den += want[i] ** 2;
  }
  return Math.sqrt(num / den);
}

const ATTENTION = [
  { name: 'shipped (4 heads, rkv 64, dr 32, dv 32)', heads: 4, kvLoraRank: 64, ropeDim: 32, qkNopeHeadDim: 32, vHeadDim: 32 },
  { name: 'V3 (128 heads, rkv 512, dr 64, dv 128)', heads: 128, kvLoraRank: 512, ropeDim: 64, qkNopeHeadDim: 128, vHeadDim: 128 },
];
const reduces = MLA_DECODE_REDUCES.filter((r) => r !== 'subgroup' || subgroups);
for (const shape of ONLY === 'route' ? [] : ONLY === 'shipped' ? ATTENTION.slice(0, 1) : ATTENTION) {
  const { heads, kvLoraRank: rkv, ropeDim: dr, qkNopeHeadDim: dn, vHeadDim: dv } = shape;
  for (const positions of [37, 256, 1000]) {
    const kv = kvBBytes({ heads, qkNopeHeadDim: dn, vHeadDim: dv, kvLoraRank: rkv }, 'fp8');
    const b = {
      qLat: uploadBuffer(device, randn(next, heads * rkv), 'q_lat'),
      qPe: uploadBuffer(device, randn(next, heads * dr), 'q_pe'),
      cache: uploadBuffer(device, randn(next, positions * (rkv + dr)), 'cache'),
      oLat: createStorageBuffer(device, 4 * heads * rkv, 'o_lat'),
      kvB: uploadBuffer(device, Uint8Array.from({ length: kv.weight }, (_, i) => (i * 37) & 0x3f), 'kv_b'),
      kvBScale: uploadBuffer(device, new Float32Array(kv.scale / 4).fill(0.01), 'kv_b.scale'),
    };
    const outs = reduces.map(() => createStorageBuffer(device, 4 * heads * dv, 'o'));
    const calls = reduces.map((reduce: MlaDecodeReduce, i) =>
      createMlaDecode(ctx, { reduce }).prepare({ rows: 1, heads, kvLoraRank: rkv, ropeDim: dr, qkNopeHeadDim: dn, vHeadDim: dv, maxT: positions, startPos: positions - 1, softmaxScale: 1 / Math.sqrt(dn + dr), ...b, o: outs[i] }));
    submitPass(device, ...calls);
    const results = await Promise.all(outs.map((o) => readF32(device, o)));
    const errors = results.map((r) => maxRel(r, results[0]));
    const ms = await race(calls);
    console.log(`mla_decode ${shape.name}, 1 row, ${positions} positions (ms per call; rel. diff from thread):`);
    for (const [i, reduce] of reduces.entries()) console.log(`  ${reduce.padEnd(10)} ${ms[i].toFixed(3)}   ${errors[i].toExponential(1)}`);
    for (const x of [...Object.values(b), ...outs, ...calls]) x.destroy();
  }
}
if (ONLY !== 'route') console.log(`chooseMlaDecodeReduce, shipped widths: ${await chooseMlaDecodeReduce(ctx, memoryVariantStore(), ATTENTION[0])}`);
if (ONLY === undefined || ONLY === 'mla') console.log(`chooseMlaDecodeReduce, V3 widths: ${await chooseMlaDecodeReduce(ctx, memoryVariantStore(), ATTENTION[1])}`);

const v3Keys = (E: number, G: number, KG: number, K: number): RouterConfig => ({ n_routed_experts: E, n_group: G, topk_group: KG, num_experts_per_tok: K, norm_topk_prob: true, routed_scaling_factor: 2.5 });
const ROUTERS: [string, RouterConfig, { d: number; I: number }][] = [
  ['shipped E=16 G=4 KG=2 K=4', v3Keys(16, 4, 2, 4), { d: 256, I: 96 }],
  ['V3 E=256 G=8 KG=4 K=8', v3Keys(256, 8, 4, 8), { d: 256, I: 96 }], // V3's router keys; the experts at the shipped widths
];
const routeReduces = ROUTE_REDUCES.filter((r) => r !== 'subgroup' || subgroups);
for (const [name, config, widths] of ONLY === 'mla' ? [] : ONLY === 'shipped' ? ROUTERS.slice(0, 1) : ROUTERS) {
  const E = config.n_routed_experts;
  const K = config.num_experts_per_tok;
  const bias = uploadBuffer(device, Float32Array.from(randn(next, E), (v) => 0.1 * v), 'bias');
  for (const tokens of [1, 64]) {
    const logits = uploadBuffer(device, randn(next, tokens * E, 1.5), 'logits');
    const outs = routeReduces.map(() => ({ ids: createStorageBuffer(device, 4 * tokens * K, 'ids'), weights: createStorageBuffer(device, 4 * tokens * K, 'weights') }));
    const calls = routeReduces.map((reduce: RouteReduce, i) => createMoeRoute(ctx, { reduce }).prepare({ tokens, config, logits, bias, topkIds: outs[i].ids, topkWeights: outs[i].weights }));
    submitPass(device, ...calls);
    const same = await Promise.all(outs.map(async (o) => [...(await readU32(device, o.ids)), ...new Uint32Array((await readF32(device, o.weights)).buffer)].join()));
    const ms = await race(calls);
    console.log(`moe_route ${name}, ${tokens} token${tokens > 1 ? 's' : ''} (ms per call):`);
    for (const [i, reduce] of routeReduces.entries()) console.log(`  ${reduce.padEnd(10)} ${ms[i].toFixed(3)}   ${same[i] === same[0] ? 'same ids and weight bits' : 'DIFFERENT'}`);
    for (const x of [logits, ...outs.flatMap((o) => [o.ids, o.weights]), ...calls]) x.destroy();
  }
  // The decode step's MoE call: the selection inside gate_up and down, the shared experts fused.
  const { d, I } = widths;
  const shape = { tokens: 1, hidden_size: d, moe_intermediate_size: I, n_routed_experts: E, num_experts_per_tok: K };
  const routed = uploadExperts(device, randomExperts(next, E, d, I, 'fp8'));
  const shared = uploadExperts(device, randomExperts(next, 1, d, I, 'fp8'));
  const x = uploadBuffer(device, randn(next, d), 'x');
  const logits = uploadBuffer(device, randn(next, E, 1.5), 'logits');
  const owned: { destroy(): void }[] = [routed, shared, x, logits];
  const outs: GPUBuffer[] = [];
  const calls = routeReduces.map((routeReduce) => {
    const scratch = createMoeExpertsScratch(device, shape, 'decode', 'scratch', 1);
    const ids = createStorageBuffer(device, 4 * K, 'ids');
    const weights = createStorageBuffer(device, 4 * K, 'weights');
    const out = createStorageBuffer(device, 4 * d, 'out');
    const h = createStorageBuffer(device, 4 * I, 'shared_h');
    owned.push(scratch, ids, weights, out, h);
    outs.push(out);
    return createMoeExperts(ctx, { routeReduce }).prepare({
      ...shape, x, topkIds: ids, topkWeights: weights, weights: routed, scratch, out,
      router: { config, logits, bias }, shared: { intermediate_size: I, weights: shared, h },
    });
  });
  submitPass(device, ...calls);
  const same = await Promise.all(outs.map(async (o) => new Uint32Array((await readF32(device, o)).buffer).join()));
  const ms = await race(calls);
  console.log(`moe_experts decode with router ${name}, d=${d} I=${I}, shared fused, 1 token (ms per call, 2 dispatches):`);
  for (const [i, reduce] of routeReduces.entries()) console.log(`  ${reduce.padEnd(10)} ${ms[i].toFixed(3)}   ${same[i] === same[0] ? 'same out bits' : 'DIFFERENT'}`);
  console.log(`chooseRouteReduce ${name}: ${await chooseRouteReduce(ctx, memoryVariantStore(), config)}`);
  for (const o of [...owned, ...calls, bias]) o.destroy();
}
process.exit(0);
