// The per_expert passes' choice of who serves which pair (moe_experts_union.wgsl lead()), which
// their outputs cannot show (a pair computed by its own row or by the row it rides along with
// has the same bits: moe_experts_fused.test.ts checks those): on the GPU (SwiftShader here), each
// gate_up row's expert is moe_route's pick of its pair, a row serves nothing when its pick is
// NONE or an earlier token chose its expert, and otherwise itself and exactly the later tokens'
// pairs of that expert, at their k. Random logits at odd router shapes (V3's keys at T = 4, the
// most pairs, and DeepSeek-V2's softmax), identical rows, ties, a token of NaN logits and NaN
// scores (a NaN bias: first expert of a kept group, and inside one); thread and subgroup selection.

import { beforeAll, describe, expect, it } from 'vitest';
import commonSource from '../../shaders/moe_experts_common.wgsl?raw';
import unionSource from '../../shaders/moe_experts_union.wgsl?raw';
import fp8Source from '../../shaders/fp8_e4m3.wgsl?raw';
import type { Gpu } from '../gpu/device.ts';
import { createStorageBuffer, readU32, uploadBuffer } from '../gpu/buffers.ts';
import { createBindGroup, dispatch, kernelPipeline, submitPass, Uniforms, type KernelContext } from '../gpu/kernel.ts';
import { PipelineCache } from '../gpu/pipeline_cache.ts';
import { randn, rng, testGpu, testSeed } from '../gpu/testing.ts';
import { createMoeRoute, prepareRouteParams, ROUTE_REDUCES, ROUTE_SNIPPET, ROUTINGS, type RouteReduce, type RouterConfig } from './moe_route.ts';
import { EXPERT_READS, EXPERT_WEIGHT_FORMATS } from './moe_experts.ts';

const NONE = 0xffffffff;
const hasSubgroups = (await testGpu()).device.features.has('subgroups');

// A probe: workgroup p writes lead(p) (the expert, the count, the 4 pairs) to result[6p ..].
const PROBE = `
override WORKGROUP_SIZE: u32 = 1u;
@group(0) @binding(0) var<uniform> params: ExpertParams;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
#if routing == noaux_tc
@group(0) @binding(2) var<storage, read> bias: array<f32>;
#endif
@group(0) @binding(3) var<uniform> route: RouteParams;
@group(0) @binding(4) var<storage, read_write> result: array<u32>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let l = lead(wid.x);
  if (lid == 0u) {
    let at = wid.x * 6u;
    result[at] = l.e;
    result[at + 1u] = l.s.count;
    for (var c = 0u; c < 4u; c++) {
      result[at + 2u + c] = l.s.pairs[c];
    }
  }
}
`;

let gpu: Gpu;
let ctx: KernelContext;
beforeAll(async () => {
  gpu = await testGpu();
  ctx = { gpu, pipelines: new PipelineCache(gpu.device) };
});

/** lead(p) for every pair on the GPU, and moe_route's ids for the same inputs. */
async function leads(config: RouterConfig, tokens: number, logits: Float32Array, bias: Float32Array | undefined, reduce: RouteReduce, workgroupSize: number): Promise<{ got: Uint32Array; ids: Uint32Array }> {
  const { device } = gpu;
  const K = config.num_experts_per_tok;
  const pairs = tokens * K;
  const bufs = {
    logits: uploadBuffer(device, logits, 'logits'),
    bias: bias && uploadBuffer(device, bias, 'bias'),
    ids: createStorageBuffer(device, 4 * pairs, 'topk_ids'),
    weights: createStorageBuffer(device, 4 * pairs, 'topk_weights'),
    result: uploadBuffer(device, new Uint32Array(6 * pairs).fill(0xdeadbeef), 'result'),
  };
  const { routing, uniforms } = prepareRouteParams(device, 'probe.route', tokens, { config, logits: bufs.logits, bias: bufs.bias, topkIds: bufs.ids, topkWeights: bufs.weights });
  const params = new Uniforms(device, 'probe', ['u32', 'u32', 'u32', 'u32', 'u32', 'u32', 'u32', 'u32', 'u32', 'u32', 'u32']);
  params.write([tokens, K, config.n_routed_experts, 4, 4, 1, 1, 0, 0, 4, 0]);
  const pipeline = kernelPipeline(ctx.pipelines, {
    kernel: 'moe_experts_union_probe',
    source: PROBE,
    snippets: [ROUTE_SNIPPET, { name: 'fp8_e4m3.wgsl', code: fp8Source }, { name: 'moe_experts_common.wgsl', code: commonSource }, { name: 'moe_experts_union.wgsl', code: unionSource }],
    axes: { weights: EXPERT_WEIGHT_FORMATS, routing: ROUTINGS, route_reduce: ROUTE_REDUCES, reads: EXPERT_READS },
    variant: { weights: 'fp8', routing, route_reduce: reduce, reads: 'per_expert' },
    constants: { WORKGROUP_SIZE: workgroupSize },
    bindings: ['uniform', 'read-only-storage', bufs.bias ? 'read-only-storage' : undefined, 'uniform', 'storage'],
  });
  const probe = dispatch(device, pipeline, createBindGroup(device, 'probe', pipeline, [params.buffer, bufs.logits, bufs.bias, uniforms.buffer, bufs.result]), [pairs, 1, 1]);
  const route = createMoeRoute(ctx).prepare({ tokens, config, logits: bufs.logits, bias: bufs.bias, topkIds: bufs.ids, topkWeights: bufs.weights });
  device.pushErrorScope('validation');
  submitPass(device, probe, route);
  expect((await device.popErrorScope())?.message).toBeUndefined();
  const result = { got: await readU32(device, bufs.result, 6 * pairs), ids: await readU32(device, bufs.ids, pairs) };
  route.destroy();
  for (const b of [...Object.values(bufs), params, uniforms]) b?.destroy();
  return result;
}

/** What lead(p) must give, from the picks: [e, count, pairs (unused slots repeat p)]. */
function expectedLead(ids: Uint32Array, K: number, p: number): number[] {
  const e = ids[p];
  const t = Math.floor(p / K);
  const earlier = e !== NONE && ids.subarray(0, t * K).includes(e);
  const later = e === NONE ? [] : Array.from({ length: ids.length - (t + 1) * K }, (_, i) => (t + 1) * K + i).filter((q) => ids[q] === e);
  const pairs = [p, ...later, p, p, p].slice(0, 4);
  return [e, e === NONE || earlier ? 0 : 1 + later.length, ...pairs];
}

async function checkLeads(config: RouterConfig, tokens: number, logits: Float32Array, bias: Float32Array | undefined, what: string): Promise<void> {
  const K = config.num_experts_per_tok;
  const variants: [RouteReduce, number][] = [['thread', 1], ['thread', 5], ...(hasSubgroups ? ([['subgroup', 4], ['subgroup', 6], ['subgroup', 1]] as [RouteReduce, number][]) : [])];
  for (const [reduce, size] of variants) {
    const { got, ids } = await leads(config, tokens, logits, bias, reduce, size);
    let served = 0;
    for (let p = 0; p < tokens * K; p++) {
      const row = Array.from(got.subarray(6 * p, 6 * p + 6));
      const want = expectedLead(ids, K, p);
      // a row that serves nothing: only its expert is read
      expect(want[1] === 0 ? row.slice(0, 2) : row, `${what} ${reduce} x${size}: lead(${p}) of ids ${Array.from(ids)}`).toEqual(want[1] === 0 ? want.slice(0, 2) : want);
      served += row[1];
    }
    // every pair with an expert is served exactly once
    expect(served, `${what} ${reduce} x${size}`).toBe(Array.from(ids).filter((e) => e !== NONE).length);
  }
}

const v3 = (E: number, G: number, KG: number, K: number): RouterConfig => ({ n_routed_experts: E, n_group: G, topk_group: KG, num_experts_per_tok: K, norm_topk_prob: true, routed_scaling_factor: 2.5 });

describe('moe_experts per_expert: who serves which pair (lead)', () => {
  const CONFIGS: [string, RouterConfig][] = [
    ['E=12 G=4 KG=2 K=3', v3(12, 4, 2, 3)],
    ['V3 keys E=256 G=8 KG=4 K=8', v3(256, 8, 4, 8)],
    ['E=13 G=1 K=5', v3(13, 1, 1, 5)],
    ['V2 softmax E=16 G=4 KG=2 K=3', { ...v3(16, 4, 2, 3), scoring_func: 'softmax', topk_method: 'group_limited_greedy' }],
  ];
  for (const [name, config] of CONFIGS) {
    it(`matches moe_route's picks at T = 2, 3, 4 (${name})`, async () => {
      const E = config.n_routed_experts;
      const softmax = config.scoring_func === 'softmax';
      const next = rng(testSeed(`moe_experts union lead ${name}`));
      for (const tokens of [2, 3, 4]) {
        const logits = randn(next, tokens * E, 1.5);
        logits.copyWithin((tokens - 1) * E, 0, E); // the last token repeats the first: all its experts shared
        const bias = softmax ? undefined : Float32Array.from(randn(next, E), (v) => 0.1 * v);
        await checkLeads(config, tokens, logits, bias, `${name} T=${tokens}`);
      }
    });
  }

  it('ties, a token of NaN logits, and NaN scores (a NaN bias) first in a kept group and inside one', async () => {
    const config = v3(12, 4, 2, 3);
    const E = 12;
    const logits = new Float32Array(4 * E); // token 0: all tied
    logits.fill(Number.NaN, E, 2 * E); // token 1: NaN logits
    for (let e = 0; e < E; e++) logits[2 * E + e] = e % 3; // token 2: ties in groups
    await checkLeads(config, 4, logits, new Float32Array(E), 'ties and NaN logits');
    const bias = new Float32Array(E);
    bias[0] = Number.NaN; // the first expert of group 0
    bias[4] = Number.NaN; // inside group 1
    const keeps01 = Array.from({ length: E }, (_, e) => (e < 6 ? 1 + e / 10 : -1));
    const keeps12 = Array.from({ length: E }, (_, e) => (e >= 3 && e < 9 ? 1 + e / 10 : -1));
    await checkLeads(config, 4, Float32Array.from([...keeps01, ...keeps12, ...keeps01, ...keeps12]), bias, 'NaN scores');
    // expert 3 NaN, first of group 1: the token keeping groups 1, 2 picks it alone; the one keeping 0, 1 never
    const bias3 = new Float32Array(E);
    bias3[3] = Number.NaN;
    await checkLeads(config, 2, Float32Array.from([...keeps12, ...keeps01]), bias3, 'a NaN first in one token, inside for the other');
  });
});
