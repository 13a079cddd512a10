// A one-off profile of the decode step (and of one 64-token prefill chunk) on this adapter: every dispatch of a plan step runs in its
// own compute pass with GPU timestamps, and the times are summed per pipeline.
//   npx tsx --import ./tools/register-raw.mjs tools/profile_decode.ts public/models/<name> [--no-fused-norms]
import { openNodeGpu } from '../src/gpu/node.ts';
import { readBuffer } from '../src/gpu/buffers.ts';
import { nodeDir } from '../src/io/node_source.ts';
import { createGpuModel } from '../src/model/gpu_model.ts';
import { loadWeights } from '../src/model/load_weights.ts';
import type { ForwardPlan, StepInput } from '../src/model/deepseek_v3.ts';

const gpu = await openNodeGpu();
const { device } = gpu;
const loaded = await loadWeights(gpu, nodeDir(process.argv[2]));
const model = createGpuModel(gpu, loaded, { fuseNorms: !process.argv.includes('--no-fused-norms') });
const cache = model.createCache(512);
const plans = model.plans(cache, { captureRouting: false });
const GREEDY = { temperature: 0, topK: 0, topP: 1, seed: 0, step: 0 };
await model.forward(plans, [1, 2, 3, 4, 5, 6, 7, 8], 0, { sample: GREEDY, mtp: true });

const MAX = 4096;
const querySet = device.createQuerySet({ type: 'timestamp', count: MAX });
const resolve = device.createBuffer({ size: 8 * MAX, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });

async function profile(name: string, plan: ForwardPlan, input: StepInput, runs = 5) {
  const totals = new Map<string, number>();
  for (let run = 0; run < runs + 1; run++) {
    const real = device.createCommandEncoder();
    const labels: string[] = [];
    let pipeline: GPUComputePipeline | undefined;
    let groups: GPUBindGroup[] = [];
    const fakePass = {
      setPipeline(p: GPUComputePipeline) { pipeline = p; },
      setBindGroup(i: number, g: GPUBindGroup) { groups[i] = g; },
      dispatchWorkgroups(x: number, y = 1, z = 1) {
        const q = labels.length * 2;
        labels.push(pipeline!.label);
        const pass = real.beginComputePass({ timestampWrites: { querySet, beginningOfPassWriteIndex: q, endOfPassWriteIndex: q + 1 } });
        pass.setPipeline(pipeline!);
        groups.forEach((g, i) => pass.setBindGroup(i, g));
        pass.dispatchWorkgroups(x, y, z);
        pass.end();
      },
      end() { groups = []; },
    };
    const fake = {
      beginComputePass: () => fakePass,
      copyBufferToBuffer: (...args: unknown[]) => (real.copyBufferToBuffer as (...a: unknown[]) => void)(...args),
    };
    plan.encode(fake as unknown as GPUCommandEncoder, input);
    real.resolveQuerySet(querySet, 0, labels.length * 2, resolve, 0);
    device.queue.submit([real.finish()]);
    const times = new BigUint64Array(await readBuffer(device, resolve, 16 * labels.length));
    if (run === 0) continue; // warm-up
    labels.forEach((label, i) => totals.set(label, (totals.get(label) ?? 0) + Number(times[2 * i + 1] - times[2 * i]) / 1e6 / runs));
  }
  const sum = [...totals.values()].reduce((a, b) => a + b, 0);
  console.log(`\n${name}: ${sum.toFixed(1)} ms of GPU time in ${totals.size} pipelines`);
  for (const [label, ms] of [...totals].sort((a, b) => b[1] - a[1])) console.log(`  ${ms.toFixed(2).padStart(8)} ms  ${label}`);
}

await profile('decode, 1 row', plans.get(1, 'last'), { ids: [9], startPos: 8, sample: GREEDY });
await profile('main model, 2 rows', plans.get(2, 'all'), { ids: [9, 10], startPos: 8, sample: GREEDY });
await profile('verify, 2 rows + MTP', plans.get(2, 'all', 'sampled'), { ids: [9, 10], startPos: 8, sample: GREEDY });
if (!process.argv.includes('--decode-only')) {
  await profile('prefill chunk, 64 rows + MTP', plans.get(64, 'last', 'shifted'), { ids: Array.from({ length: 64 }, (_, i) => 100 + i), startPos: 0, nextId: 164, sample: GREEDY }, 2);
}
process.exit(0);
