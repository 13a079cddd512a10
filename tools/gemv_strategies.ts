// The time of one decode GEMV call (M = 1) per strategy on this adapter (issue 19 item 2), at the
// shipped checkpoint's shapes (webmoe-kjv-12m: hidden 256, q_lora_rank 128, kv_lora_rank 64, 4
// heads of 32 + 32): the bf16 lm_head, the fp8 Linears of attention and the dense MLP, a wider
// fp8 one, and the fused q_a_proj | kv_a_proj_with_mqa (linears: two). Timing as
// tools/rmsnorm_reduce.ts: timeComputePass (GPU timestamps where the adapter has them), the
// strategies in interleaved rounds so a drifting machine load slows all alike, each figure the
// median over rounds of each round's best of RUNS passes of CALLS calls in a row, divided by
// CALLS (SwiftShader's timestamps tick in 65.5 us steps). Last, what chooseGemvStrategy picks.
//   npx tsx --import ./tools/register-raw.mjs tools/gemv_strategies.ts [rounds]
import { createStorageBuffer, uploadBuffer } from '../src/gpu/buffers.ts';
import { openNodeGpu } from '../src/gpu/node.ts';
import { PipelineCache } from '../src/gpu/pipeline_cache.ts';
import { median, timeComputePass } from '../src/gpu/timing.ts';
import { createGemv, type GemvOptions } from '../src/kernels/gemv_fp8.ts';
import { operandBytes, type WeightFormat } from '../src/kernels/matmul_operands.ts';
import { chooseGemvStrategy, memoryVariantStore } from '../src/kernels/variant_choice.ts';

const ROUNDS = Number(process.argv[2] ?? 5);
const RUNS = 3;
const CALLS = 16;
const gpu = await openNodeGpu();
const ctx = { gpu, pipelines: new PipelineCache(gpu.device) };
const info = gpu.device.adapterInfo;
const subgroups = gpu.device.features.has('subgroups');
console.log(`adapter: ${gpu.adapter.description} (subgroups ${subgroups}, sizes ${info.subgroupMinSize}..${info.subgroupMaxSize}, timing ${gpu.adapter.features['timestamp-query'] ? 'timestamps' : 'wall clock'})`);

const strategies: [string, GemvOptions][] = [
  ['thread_per_4_rows', { strategy: 'thread_per_4_rows' }],
  ['workgroup_per_row', { strategy: 'workgroup_per_row' }],
];
if (subgroups) for (const wg of [4, 16, 64]) strategies.push([`subgroup_per_row wg ${wg}`, { strategy: 'subgroup_per_row', workgroupSize: wg }]);

interface Case {
  name: string;
  weights: WeightFormat;
  N: number;
  K: number;
  /** The second Linear's N (linears: two). */
  Nb?: number;
}
const CASES: Case[] = [
  { name: 'lm_head', weights: 'bf16', N: 8192, K: 256 },
  { name: 'q_b_proj / o_proj', weights: 'fp8', N: 256, K: 128 },
  { name: 'kv_b_proj', weights: 'fp8', N: 256, K: 64 },
  { name: 'dense gate_proj / up_proj', weights: 'fp8', N: 512, K: 256 },
  { name: 'dense down_proj', weights: 'fp8', N: 256, K: 512 },
  { name: 'fp8 [1024, 256]', weights: 'fp8', N: 1024, K: 256 },
  { name: 'q_a_proj | kv_a_proj_with_mqa', weights: 'fp8', N: 128, K: 256, Nb: 96 },
];

const { device } = gpu;
function operands(weights: WeightFormat, N: number, K: number) {
  const bytes = operandBytes({ M: 1, N, K }, { weights, numerics: 'weight_only' });
  const weight = uploadBuffer(device, Uint8Array.from({ length: bytes.weight }, (_, i) => (i * 37) & 0x3f), 'weight'); // finite codes / bits
  const scales = Math.ceil(N / 128) * Math.ceil(K / 128);
  const weight_scale_inv = weights === 'fp8' ? uploadBuffer(device, new Float32Array(scales).fill(0.5), 'scale') : undefined;
  return { weight, weight_scale_inv, y: createStorageBuffer(device, bytes.y, 'y') };
}

for (const c of CASES) {
  const x = uploadBuffer(device, new Float32Array(c.K).fill(1), 'x');
  const a = operands(c.weights, c.N, c.K);
  const b = c.Nb === undefined ? undefined : operands(c.weights, c.Nb, c.K);
  const calls = strategies.map(([, o]) => {
    const kernel = createGemv(ctx, { ...o, weights: c.weights, linears: b ? 'two' : 'one' });
    return kernel.prepare({ M: 1, N: c.N, K: c.K, x, ...a, second: b && { N: c.Nb!, ...b } });
  });
  const times: number[][] = strategies.map(() => []);
  for (let round = 0; round < ROUNDS; round++) {
    for (const [i, call] of calls.entries()) {
      const record = (pass: GPUComputePassEncoder) => {
        for (let k = 0; k < CALLS; k++) call.encode(pass);
      };
      times[i].push((await timeComputePass(gpu, record, { warmup: round === 0 ? 2 : 1, runs: RUNS })).minMs / CALLS);
    }
  }
  const shape = `${c.weights} N=${c.N}${c.Nb ? `+${c.Nb}` : ''} K=${c.K}`;
  console.log(`${c.name} (${shape}; ms per call, median of ${ROUNDS} rounds' best of ${RUNS} passes of ${CALLS}):`);
  for (const [i, [name]] of strategies.entries()) console.log(`  ${name.padEnd(24)} ${median(times[i]).toFixed(4)}`);
  for (const r of [x, a.weight, a.weight_scale_inv, a.y, b?.weight, b?.weight_scale_inv, b?.y, ...calls]) r?.destroy();
}

for (const weights of ['fp8', 'bf16'] as const) console.log(`chooseGemvStrategy (${weights}) on this adapter: ${await chooseGemvStrategy(ctx, memoryVariantStore(), { weights })}`);
process.exit(0);
