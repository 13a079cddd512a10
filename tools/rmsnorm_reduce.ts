// The time of one RMSNorm call per reduction on this adapter (issue 19 item 2): rows 1 (decode)
// and 64 (a prefill chunk) at the shipped checkpoint's hidden size (256) and DeepSeek-V3's (7168),
// plain and with the residual add, with the benchmark's timing (timeComputePass: GPU timestamps
// where the adapter has them). The reductions are timed in interleaved rounds, so a machine whose
// load drifts slows all alike; each figure is the median over rounds of each round's best of RUNS
// passes. "1 call": a pass of one call, as the benchmark times it (SwiftShader's timestamps tick
// in 65.5 us steps); "per call of 16" (rows 1 only): a pass of 16 calls in a row, divided by 16
// (the ticks and the pass overhead spread out). Last, what chooseRmsNormReduce picks here.
//   npx tsx --import ./tools/register-raw.mjs tools/rmsnorm_reduce.ts [rounds]
import { createStorageBuffer, uploadBuffer } from '../src/gpu/buffers.ts';
import { openNodeGpu } from '../src/gpu/node.ts';
import { PipelineCache } from '../src/gpu/pipeline_cache.ts';
import { median, timeComputePass } from '../src/gpu/timing.ts';
import { createRmsNorm, type RmsNormOptions } from '../src/kernels/rmsnorm.ts';
import { chooseRmsNormReduce, memoryVariantStore } from '../src/kernels/variant_choice.ts';

const ROUNDS = Number(process.argv[2] ?? 7);
const RUNS = 5;
const gpu = await openNodeGpu();
const ctx = { gpu, pipelines: new PipelineCache(gpu.device) };
const info = gpu.device.adapterInfo;
console.log(`adapter: ${gpu.adapter.description} (subgroups ${gpu.device.features.has('subgroups')}, sizes ${info.subgroupMinSize}..${info.subgroupMaxSize}, timing ${gpu.adapter.features['timestamp-query'] ? 'timestamps' : 'wall clock'})`);

const variants: [string, Omit<RmsNormOptions, 'addResidual'>][] = [
  ['thread', { reduce: 'thread' }],
  ['workgroup', { reduce: 'workgroup' }],
];
if (gpu.device.features.has('subgroups')) {
  for (const wg of new Set([createRmsNorm(ctx, { reduce: 'subgroup' }).workgroupSize, 32, 64, 256])) {
    variants.push([`subgroup wg ${wg}`, { reduce: 'subgroup', subgroupWorkgroupSize: wg }]);
  }
}

// rows 1: a decode step's norms; rows 64: a prefill chunk's (DEFAULT_PREFILL_CHUNK).
for (const [rows, width] of [[1, 256], [1, 7168], [64, 256], [64, 7168]]) {
  for (const addResidual of [false, true]) {
    const ones = new Float32Array(rows * width).fill(1);
    const x = uploadBuffer(gpu.device, ones, 'x');
    const delta = addResidual ? uploadBuffer(gpu.device, new Float32Array(rows * width), 'delta') : undefined; // zeros: x stays finite
    const weight = uploadBuffer(gpu.device, ones, 'weight');
    const y = createStorageBuffer(gpu.device, 4 * rows * width, 'y');
    const calls = variants.map(([, o]) => createRmsNorm(ctx, { ...o, addResidual }).prepare({ rows, width, eps: 1e-6, x, weight, y, delta }));
    const one: number[][] = variants.map(() => []);
    const batched: number[][] = variants.map(() => []);
    for (let round = 0; round < ROUNDS; round++) {
      for (const [i, call] of calls.entries()) {
        const warmup = round === 0 ? 2 : 1;
        one[i].push((await timeComputePass(gpu, (pass) => call.encode(pass), { warmup, runs: RUNS })).minMs);
        if (rows > 1) continue; // a prefill chunk's call is well above the tick (and `workgroup`'s takes ~50 ms here)
        const sixteen = (pass: GPUComputePassEncoder) => {
          for (let k = 0; k < 16; k++) call.encode(pass);
        };
        batched[i].push((await timeComputePass(gpu, sixteen, { warmup, runs: RUNS })).minMs / 16);
      }
    }
    console.log(`rows ${rows} width ${width}${addResidual ? ' +residual' : ''} (ms, median of ${ROUNDS} rounds' best of ${RUNS} passes):`);
    for (const [i, [name]] of variants.entries()) {
      const sixteen = rows > 1 ? '' : `   per call of 16 ${median(batched[i]).toFixed(3)}`;
      console.log(`  ${name.padEnd(16)} 1 call ${median(one[i]).toFixed(3)}${sixteen}`);
    }
    for (const b of [x, delta, weight, y, ...calls]) b?.destroy();
  }
}

const choice = await chooseRmsNormReduce(ctx, memoryVariantStore());
console.log(`chooseRmsNormReduce on this adapter: ${choice}`);
process.exit(0);
