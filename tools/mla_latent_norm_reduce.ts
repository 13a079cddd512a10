// The time of one mla_latent_norm call (q_a_layernorm, kv_a_layernorm and k_pe's RoPE into the
// cache) per reduction on this adapter (issue 19 item 2): rows 1 (decode) and 64 (a prefill chunk)
// at the shipped checkpoint's shape (webmoe-kjv-12m: kv_lora_rank 64, q_lora_rank 128,
// qk_rope_head_dim 32) and DeepSeek-V3's (512, 1536, 64), with the benchmark's timing
// (timeComputePass). As tools/rmsnorm_reduce.ts: the reductions in interleaved rounds, each figure
// the median over rounds of each round's best of RUNS passes; "1 call": a pass of one call;
// "per call of 16": a pass of 16 calls divided by 16 (SwiftShader's timestamps tick in 65.5 us
// steps, and a lone dispatch there is often at the mercy of its thread pool), not for a variant
// whose first call took over 10 ms (the one-workgroup-per-row reductions at 64 rows on a CPU). Last, what chooseRmsNormReduce (whose choice the engine passes to this kernel
// too) picks here at the shipped hidden size.
//   npx tsx --import ./tools/register-raw.mjs tools/mla_latent_norm_reduce.ts [rounds]
import { createStorageBuffer, uploadBuffer } from '../src/gpu/buffers.ts';
import { openNodeGpu } from '../src/gpu/node.ts';
import { PipelineCache } from '../src/gpu/pipeline_cache.ts';
import { median, timeComputePass } from '../src/gpu/timing.ts';
import { createMlaLatentNorm, type MlaLatentNormOptions } from '../src/kernels/mla_latent_norm.ts';
import { chooseRmsNormReduce, memoryVariantStore } from '../src/kernels/variant_choice.ts';

const ROUNDS = Number(process.argv[2] ?? 7);
const RUNS = 5;
const gpu = await openNodeGpu();
const ctx = { gpu, pipelines: new PipelineCache(gpu.device) };
const { device } = gpu;
const info = device.adapterInfo;
console.log(`adapter: ${gpu.adapter.description} (subgroups ${device.features.has('subgroups')}, sizes ${info.subgroupMinSize}..${info.subgroupMaxSize}, timing ${gpu.adapter.features['timestamp-query'] ? 'timestamps' : 'wall clock'})`);

const variants: [string, MlaLatentNormOptions][] = [
  ['thread', { reduce: 'thread' }],
  ['workgroup', { reduce: 'workgroup' }],
];
if (device.features.has('subgroups')) {
  for (const wg of new Set([createMlaLatentNorm(ctx, { reduce: 'subgroup' }).workgroupSize, 32, 64, 256])) {
    variants.push([`subgroup wg ${wg}`, { reduce: 'subgroup', subgroupWorkgroupSize: wg }]);
  }
}

const SHAPES = [
  { name: 'webmoe-kjv-12m', kvLoraRank: 64, qWidth: 128, ropeDim: 32, hidden: 256 },
  { name: 'DeepSeek-V3', kvLoraRank: 512, qWidth: 1536, ropeDim: 64, hidden: 7168 },
];
for (const shape of SHAPES) {
  for (const rows of [1, 64]) {
    const width = shape.kvLoraRank + shape.ropeDim;
    const ones = (n: number) => new Float32Array(n).fill(1);
    const kvA = uploadBuffer(device, ones(rows * width), 'kv_a');
    const kvNormWeight = uploadBuffer(device, ones(shape.kvLoraRank), 'kv_a_layernorm');
    const positions = uploadBuffer(device, Uint32Array.from({ length: rows }, (_, i) => i), 'positions');
    const invFreq = uploadBuffer(device, ones(shape.ropeDim / 2), 'inv_freq');
    const cache = createStorageBuffer(device, 4 * rows * width, 'cache');
    const qA = uploadBuffer(device, ones(rows * shape.qWidth), 'q_a');
    const qWeight = uploadBuffer(device, ones(shape.qWidth), 'q_a_layernorm');
    const qANorm = createStorageBuffer(device, 4 * rows * shape.qWidth, 'q_a_norm');
    const calls = variants.map(([, o]) => createMlaLatentNorm(ctx, { ...o, qNorm: 'q_a_layernorm' }).prepare({
      rows, kvLoraRank: shape.kvLoraRank, ropeDim: shape.ropeDim, eps: 1e-6, kvA, kvNormWeight, positions, invFreq,
      cache, cacheRows: rows, startPos: 0, q: { width: shape.qWidth, qA, weight: qWeight, qANorm },
    }));
    const one: number[][] = variants.map(() => []);
    const batched: number[][] = variants.map(() => []);
    for (let round = 0; round < ROUNDS; round++) {
      for (const [i, call] of calls.entries()) {
        const warmup = round === 0 ? 2 : 1;
        one[i].push((await timeComputePass(gpu, (pass) => call.encode(pass), { warmup, runs: RUNS })).minMs);
        if (one[i][0] > 10) continue;
        const sixteen = (pass: GPUComputePassEncoder) => {
          for (let k = 0; k < 16; k++) call.encode(pass);
        };
        batched[i].push((await timeComputePass(gpu, sixteen, { warmup, runs: RUNS })).minMs / 16);
      }
    }
    console.log(`${shape.name} (kv_lora_rank ${shape.kvLoraRank}, q_lora_rank ${shape.qWidth}, rope ${shape.ropeDim}) rows ${rows} (ms, median of ${ROUNDS} rounds' best of ${RUNS} passes):`);
    for (const [i, [name]] of variants.entries()) {
      const sixteen = batched[i].length === 0 ? '' : `   per call of 16 ${median(batched[i]).toFixed(3)}`;
      console.log(`  ${name.padEnd(16)} 1 call ${median(one[i]).toFixed(3)}${sixteen}`);
    }
    for (const b of [kvA, kvNormWeight, positions, invFreq, cache, qA, qWeight, qANorm, ...calls]) b.destroy();
  }
}

for (const { name, hidden } of SHAPES) {
  const choice = await chooseRmsNormReduce(ctx, memoryVariantStore(), { width: hidden });
  console.log(`chooseRmsNormReduce on this adapter at ${name}'s hidden_size ${hidden}: ${choice}`);
}
process.exit(0);
