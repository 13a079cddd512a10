// ms per call of prepared calls raced against each other, for the variant tools
// (tools/mla_decode_route_reduce.ts, tools/moe_verify_experts.ts): interleaved rounds, each call's
// best of `runs` passes of `perPass` calls per round (the first round warms up twice), the median
// over rounds. CPU adapters jitter; only ratios within one race mean much.
import type { Gpu } from '../src/gpu/device.ts';
import type { PreparedCall } from '../src/gpu/kernel.ts';
import { median, timeComputePass } from '../src/gpu/timing.ts';

export async function raceCalls(gpu: Gpu, calls: readonly PreparedCall[], { rounds, runs = 3, perPass = 4 }: { rounds: number; runs?: number; perPass?: number }): Promise<number[]> {
  const times: number[][] = calls.map(() => []);
  for (let round = 0; round < rounds; round++) {
    for (const [i, call] of calls.entries()) {
      const record = (pass: GPUComputePassEncoder) => {
        for (let k = 0; k < perPass; k++) call.encode(pass);
      };
      times[i].push((await timeComputePass(gpu, record, { warmup: round === 0 ? 2 : 1, runs })).minMs / perPass);
    }
  }
  return times.map(median);
}
