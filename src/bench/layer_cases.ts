// Benchmark cases of the layer kernels: RMSNorm, YaRN RoPE, the router and sampling, at
// DeepSeek-V3's shapes and at small odd ones, each checked against its CPU reference first.

import { createStorageBuffer, readF32, readU32, uploadBuffer } from '../gpu/buffers.ts';
import { ropeInvFreq } from '../kernels/rope_tables.ts';
import { createMlaDecode } from '../kernels/mla_decode.ts';
import { mlaDecodeRef } from '../kernels/mla_decode.ref.ts';
import { expandORef } from '../kernels/mla_absorb.ref.ts';
import { dequantizeRef } from '../kernels/gemm_fp8.ref.ts';
import { randomWeight } from '../testing/random_weights.ts';
import { createMlaPrefill } from '../kernels/mla_prefill.ts';
import { createMoeExperts, createMoeExpertsScratch, type MoePath } from '../kernels/moe_experts.ts';
import { moeExpertsRef } from '../kernels/moe_experts.ref.ts';
import { randomExperts, randomRouting, uploadExperts } from '../testing/moe_experts_testing.ts';
import { createMoeRoute } from '../kernels/moe_route.ts';
import { moeRouteRef, type RouterConfig } from '../kernels/moe_route.ref.ts';
import { createRmsNorm } from '../kernels/rmsnorm.ts';
import { rmsNormRef } from '../kernels/rmsnorm.ref.ts';
import { createRopeYarn } from '../kernels/rope_yarn.ts';
import { ropeRef } from '../kernels/rope_yarn.ref.ts';
import { createSample } from '../kernels/sample.ts';
import { sampleRef, type SamplingParams } from '../kernels/sample.ref.ts';
import { randn, relError, rng } from '../testing/random.ts';
import type { BenchCase } from './bench_case.ts';

const V3_ROPE = { qk_rope_head_dim: 64, rope_theta: 10000, rope_scaling: { type: 'yarn', factor: 40, original_max_position_embeddings: 4096, beta_fast: 32, beta_slow: 1, mscale: 1, mscale_all_dim: 1 } };
const V3_ROUTER: RouterConfig = { n_routed_experts: 256, n_group: 8, topk_group: 4, num_experts_per_tok: 8, norm_topk_prob: true, routed_scaling_factor: 2.5 };
const SMALL_ROUTER: RouterConfig = { n_routed_experts: 12, n_group: 4, topk_group: 3, num_experts_per_tok: 6, norm_topk_prob: true, routed_scaling_factor: 2.5 };

function rmsnormCase(rows: number, width: number, note: string): BenchCase {
  return {
    name: 'rmsnorm',
    shape: { rows, width },
    note,
    async prepare({ gpu, pipelines }) {
      const next = rng(rows * 31 + width);
      const x = randn(next, rows * width, 2);
      const weight = Float32Array.from({ length: width }, () => 1 + 0.1 * (next() - 0.5));
      const b = { x: uploadBuffer(gpu.device, x, 'x'), weight: uploadBuffer(gpu.device, weight, 'w'), y: createStorageBuffer(gpu.device, 4 * rows * width, 'y') };
      const kernel = createRmsNorm({ gpu, pipelines });
      const call = kernel.prepare({ rows, width, eps: 1e-6, ...b });
      return {
        call,
        variant: kernel.reduce,
        async check(run) {
          await run();
          const want = new Float32Array(rows * width);
          rmsNormRef({ rows, width, eps: 1e-6, x, weight, y: want });
          return relError(await readF32(gpu.device, b.y, rows * width), want).rel;
        },
        destroy: () => [call, ...Object.values(b)].forEach((r) => r.destroy()),
      };
    },
  };
}

function ropeCase(rows: number, heads: number, note: string): BenchCase {
  const ropeDim = 64;
  const headStride = 192; // qk_nope_head_dim 128 + qk_rope_head_dim 64: the q rows of V3
  return {
    name: 'rope_yarn',
    shape: { rows, heads, ropeDim },
    note,
    async prepare({ gpu, pipelines }) {
      const next = rng(rows * 7 + heads);
      const x = randn(next, rows * heads * headStride);
      const positions = Uint32Array.from({ length: rows }, (_, t) => 4000 + t);
      const invFreq = ropeInvFreq(V3_ROPE as never);
      const slices = { rows, heads, ropeDim, rowStride: heads * headStride, headStride, ropeOffset: 128 };
      const b = { x: uploadBuffer(gpu.device, x, 'x'), positions: uploadBuffer(gpu.device, positions, 'pos'), invFreq: uploadBuffer(gpu.device, invFreq, 'inv') };
      const call = createRopeYarn({ gpu, pipelines }).prepare({ ...slices, ...b });
      return {
        call,
        async check(run) {
          await run();
          const want = x.slice();
          ropeRef(want, slices, positions, invFreq);
          return relError(await readF32(gpu.device, b.x, x.length), want).rel;
        },
        destroy: () => [call, ...Object.values(b)].forEach((r) => r.destroy()),
      };
    },
  };
}

function routeCase(tokens: number, config: RouterConfig, note: string): BenchCase {
  const E = config.n_routed_experts;
  const K = config.num_experts_per_tok;
  return {
    name: 'moe_route',
    shape: { tokens, experts: E, topk: K, groups: config.n_group },
    note,
    async prepare({ gpu, pipelines }) {
      const next = rng(tokens * 13 + E);
      const logits = randn(next, tokens * E, 1.5);
      const bias = Float32Array.from({ length: E }, () => (next() - 0.5) * 0.24);
      const b = {
        logits: uploadBuffer(gpu.device, logits, 'logits'),
        bias: uploadBuffer(gpu.device, bias, 'bias'),
        topkIds: createStorageBuffer(gpu.device, 4 * tokens * K, 'ids'),
        topkWeights: createStorageBuffer(gpu.device, 4 * tokens * K, 'weights'),
      };
      const call = createMoeRoute({ gpu, pipelines }).prepare({ tokens, config, ...b });
      return {
        call,
        async check(run) {
          await run();
          const want = moeRouteRef(logits, bias, tokens, config);
          const ids = await readU32(gpu.device, b.topkIds, tokens * K);
          const idsWrong = ids.some((id, i) => id !== want.ids[i]);
          return idsWrong ? 1 : relError(await readF32(gpu.device, b.topkWeights, tokens * K), want.weights).rel;
        },
        destroy: () => [call, ...Object.values(b)].forEach((r) => r.destroy()),
      };
    },
  };
}

function sampleCase(rows: number, vocab: number, sampling: SamplingParams, note: string): BenchCase {
  return {
    name: sampling.temperature === 0 ? 'sample.argmax' : 'sample',
    shape: { rows, vocab, top_k: sampling.topK },
    note,
    async prepare({ gpu, pipelines }) {
      const next = rng(rows * 5 + vocab);
      const logits = randn(next, rows * vocab, 3);
      const b = { logits: uploadBuffer(gpu.device, logits, 'logits'), ids: createStorageBuffer(gpu.device, 4 * rows, 'ids') };
      const call = createSample({ gpu, pipelines }).prepare({ rows, vocab, ...b, sampling });
      return {
        call,
        variant: gpu.adapter.isSoftware ? 'software' : 'gpu',
        async check(run) {
          await run();
          const want = sampleRef({ rows, vocab, logits, params: sampling });
          const got = await readU32(gpu.device, b.ids, rows);
          return got.every((id, i) => id === want[i]) ? 0 : 1;
        },
        destroy: () => [call, ...Object.values(b)].forEach((r) => r.destroy()),
      };
    },
  };
}

/** Absorbed MLA over a prefill chunk of `rows` new positions after `startPos` cached ones. */
function mlaPrefillCase(rows: number, heads: number, kvLoraRank: number, ropeDim: number, startPos: number, note: string): BenchCase {
  return {
    name: 'mla_prefill',
    shape: { rows, heads, kv_lora_rank: kvLoraRank, rope: ropeDim, start_pos: startPos },
    note,
    async prepare({ gpu, pipelines }) {
      const next = rng(rows * 5 + heads + startPos);
      const context = startPos + rows;
      const width = kvLoraRank + ropeDim;
      const qLat = randn(next, rows * heads * kvLoraRank, 0.1);
      const qPe = randn(next, rows * heads * ropeDim, 0.1);
      const cacheRows = randn(next, context * width);
      const softmaxScale = 0.1352;
      const b = {
        qLat: uploadBuffer(gpu.device, qLat, 'q_lat'),
        qPe: uploadBuffer(gpu.device, qPe, 'q_pe'),
        cache: uploadBuffer(gpu.device, cacheRows, 'cache'),
        oLat: createStorageBuffer(gpu.device, 4 * rows * heads * kvLoraRank, 'o_lat'),
      };
      const call = createMlaPrefill({ gpu, pipelines }, { kvLoraRank }).prepare({ rows, heads, kvLoraRank, ropeDim, maxT: context, startPos, softmaxScale, ...b });
      return {
        call,
        variant: gpu.adapter.isSoftware ? 'invocation_per_row' : 'flash_tile_16',
        async check(run) {
          await run();
          // mla_decode's reference has the same contract: row r attends to 0 .. startPos + r.
          const want = mlaDecodeRef({ rows, heads, kvLoraRank, ropeDim, startPos, softmaxScale, qLat, qPe, cache: cacheRows });
          return relError(await readF32(gpu.device, b.oLat, want.length), want).rel;
        },
        destroy: () => [call, ...Object.values(b)].forEach((r) => r.destroy()),
      };
    },
  };
}

/** Absorbed MLA decode over `context` cached latent rows, through W_UV (FP8 kv_b_proj); the projections are GEMVs, benched apart. */
function mlaDecodeCase(rows: number, heads: number, kvLoraRank: number, ropeDim: number, nope: number, vHeadDim: number, context: number, note: string): BenchCase {
  return {
    name: 'mla_decode',
    shape: { rows, heads, kv_lora_rank: kvLoraRank, rope: ropeDim, v_head_dim: vHeadDim, context },
    note,
    async prepare({ gpu, pipelines }) {
      const next = rng(context * 3 + heads);
      const width = kvLoraRank + ropeDim;
      const startPos = context - rows;
      const qLat = randn(next, rows * heads * kvLoraRank, 0.1);
      const qPe = randn(next, rows * heads * ropeDim, 0.1);
      const cache = randn(next, context * width);
      const softmaxScale = 0.1352;
      const kvB = randomWeight('fp8', heads * (nope + vHeadDim), kvLoraRank, next);
      const b = {
        qLat: uploadBuffer(gpu.device, qLat, 'q_lat'),
        qPe: uploadBuffer(gpu.device, qPe, 'q_pe'),
        cache: uploadBuffer(gpu.device, cache, 'cache'),
        oLat: createStorageBuffer(gpu.device, 4 * rows * heads * kvLoraRank, 'o_lat'),
        kvB: uploadBuffer(gpu.device, kvB.bytes, 'kv_b_proj'),
        kvBScale: uploadBuffer(gpu.device, kvB.scale!, 'kv_b_proj.scale'),
        o: createStorageBuffer(gpu.device, 4 * rows * heads * vHeadDim, 'o'),
      };
      const call = createMlaDecode({ gpu, pipelines }).prepare({
        rows, heads, kvLoraRank, ropeDim, qkNopeHeadDim: nope, vHeadDim, maxT: context, startPos, softmaxScale, ...b,
      });
      return {
        call,
        variant: gpu.adapter.isSoftware ? 'invocation_per_head' : 'workgroup_per_head',
        async check(run) {
          await run();
          const oLat = mlaDecodeRef({ rows, heads, kvLoraRank, ropeDim, startPos, softmaxScale, qLat, qPe, cache });
          const shape = { rows, heads, qkNopeHeadDim: nope, qkRopeHeadDim: ropeDim, vHeadDim, kvLoraRank };
          const want = expandORef({ ...shape, kvB: dequantizeRef(kvB, heads * (nope + vHeadDim), kvLoraRank), oLat });
          return relError(await readF32(gpu.device, b.o, want.length), want).rel;
        },
        destroy: () => [call, ...Object.values(b)].forEach((r) => r.destroy()),
      };
    },
  };
}

/** Routed experts (SwiGLU over stacked FP8 weights) for `tokens` tokens choosing `topk` of `experts`. */
function moeExpertsCase(tokens: number, hidden: number, inter: number, experts: number, topk: number, path: MoePath, note: string): BenchCase {
  return {
    name: `moe_experts.${path}`,
    shape: { tokens, hidden, moe_inter: inter, experts, topk },
    note,
    async prepare({ gpu, pipelines }) {
      const next = rng(tokens * 11 + hidden + experts);
      const shape = { tokens, hidden_size: hidden, moe_intermediate_size: inter, n_routed_experts: experts, num_experts_per_tok: topk };
      const x = randn(next, tokens * hidden);
      // Every expert chosen by some token when topk == experts; else one hot, two cold, as the tests do.
      const ids = topk === experts ? Uint32Array.from({ length: tokens * topk }, (_, i) => i % topk) : randomRouting(next, tokens, topk, experts);
      const w = Float32Array.from({ length: tokens * topk }, () => next());
      const weights = randomExperts(next, experts, hidden, inter);
      const gpuWeights = uploadExperts(gpu.device, weights);
      const scratch = createMoeExpertsScratch(gpu.device, shape, path);
      const b = {
        x: uploadBuffer(gpu.device, x, 'x'),
        topkIds: uploadBuffer(gpu.device, ids, 'ids'),
        topkWeights: uploadBuffer(gpu.device, w, 'w'),
        out: createStorageBuffer(gpu.device, 4 * tokens * hidden, 'out'),
      };
      const call = createMoeExperts({ gpu, pipelines }).prepare({ ...shape, path, ...b, weights: gpuWeights, scratch });
      return {
        call,
        async check(run) {
          await run();
          const want = moeExpertsRef({ tokens, topk, hidden_size: hidden, moe_intermediate_size: inter, x, topkIds: ids, topkWeights: w, weights });
          return relError(await readF32(gpu.device, b.out, want.length), want).rel;
        },
        destroy: () => [call, gpuWeights, scratch, ...Object.values(b)].forEach((r) => r.destroy()),
      };
    },
  };
}

export function layerCases({ small, v3 }: { small: boolean; v3: boolean }): BenchCase[] {
  const cases: BenchCase[] = [];
  const topP: SamplingParams = { temperature: 0.7, topK: 50, topP: 0.9, seed: 1, step: 0 };
  if (v3) {
    cases.push(
      rmsnormCase(1, 7168, 'attn_norm, decode'),
      rmsnormCase(512, 7168, 'attn_norm, prefill chunk'),
      ropeCase(1, 128, 'q_pe, decode'),
      ropeCase(512, 128, 'q_pe, prefill chunk'),
      mlaDecodeCase(1, 128, 512, 64, 128, 128, 4096, 'decode over 4096 cached positions'),
      mlaPrefillCase(128, 128, 512, 64, 0, 'prefill chunk of 128 from position 0'),
      routeCase(1, V3_ROUTER, 'decode'),
      moeExpertsCase(1, 7168, 2048, 8, 8, 'decode', 'the 8 chosen experts of one token (8 stacked: 256 do not fit one binding)'),
      routeCase(512, V3_ROUTER, 'prefill chunk'),
      sampleCase(1, 129280, { ...topP, temperature: 0 }, 'greedy over the V3 vocabulary'),
      sampleCase(1, 129280, topP, 'temperature 0.7, top-k 50, top-p 0.9'),
    );
  }
  if (small) {
    cases.push(
      moeExpertsCase(1, 128, 128, 12, 6, 'decode', 'fixture expert shape'),
      moeExpertsCase(33, 128, 128, 12, 6, 'grouped', 'fixture expert shape, prefill'),
      rmsnormCase(7, 301, 'odd shape'), mlaDecodeCase(2, 8, 256, 32, 32, 48, 300, 'fixture shape, MTP verify rows'),
      mlaPrefillCase(130, 8, 256, 32, 0, 'fixture shape, 130-token prompt'), routeCase(33, SMALL_ROUTER, 'fixture router shape'), sampleCase(2, 320, topP, 'fixture vocabulary, MTP verify rows'));
  }
  return cases;
}
