// The kernel benchmark: every kernel at DeepSeek-V3's per-layer shapes (where they fit) and at the
// small test shapes; each is checked against its CPU reference, then timed (median after warm-up),
// and reported with its bytes and FLOPs against the adapter's ceilings measured in the same run.
// TF.js's WebGPU matMul runs on every matrix shape as the peer. Used by `webmoe bench --kernels`
// and by the benchmark page.

import { throwIfAborted } from '../errors.ts';
import type { Gpu } from '../gpu/device.ts';
import { PipelineCache } from '../gpu/pipeline_cache.ts';
import { defaultVariantStore, type VariantStore } from '../kernels/variant_choice.ts';
import type { BenchCase } from './bench_case.ts';
import { measureCeilings } from './ceilings.ts';
import { measureDecodeCost, type DecodeCostResult } from './decode_cost.ts';
import { layerCases } from './layer_cases.ts';
import { matmulCase } from './matmul_cases.ts';
import { tfjsMatmulPeer, type MatmulPeer } from './peers.ts';
import { timeComputePass } from '../gpu/timing.ts';
import { submitPass } from '../gpu/kernel.ts';

export type { BenchCase, PreparedBench } from './bench_case.ts';

export interface KernelResult {
  name: string;
  shape: Record<string, number>;
  note?: string;
  variant?: string;
  median_ms: number;
  wall_median_ms: number;
  runs: number;
  timing: 'timestamp' | 'wall';
  bytes: number;
  flops: number;
  gbps: number;
  gflops: number;
  copy_fraction: number;
  fma_fraction: number;
  check_rel_error: number;
}

export interface PeerResult {
  name: string;
  shape: Record<string, number>;
  median_ms: number;
  runs: number;
  /** Our kernel's wall-clock median over the peer's on the same shape (> 1: ours is faster). */
  speedup_of_ours?: number;
  versus?: string;
}

export interface BenchReport {
  adapter: { vendor: string; architecture: string; description: string; isSoftware: boolean; features: Record<string, boolean> };
  copy_gbps: number;
  fma_gflops: number;
  kernels: KernelResult[];
  peers: PeerResult[];
  /** FP8 against f32 weights in the same GEMM, timed in alternation (decode_cost.ts). */
  fp8_decode_cost: DecodeCostResult[];
}

export type ShapeSet = 'small' | 'v3' | 'all';

/** DeepSeek-V3's per-layer matrix shapes (hidden 7168, q_lora_rank 1536, kv 512+64, 128 heads). */
export function benchCases(shapes: ShapeSet): BenchCase[] {
  const small = shapes !== 'v3';
  const v3 = shapes !== 'small';
  const cases: BenchCase[] = [];
  if (v3) {
    cases.push(
      matmulCase('gemv_fp8', 'fp8', { M: 1, K: 7168, N: 1536 }, 'q_a_proj, decode'),
      matmulCase('gemv_fp8', 'fp8', { M: 2, K: 7168, N: 1536 }, 'q_a_proj, MTP verify step'),
      matmulCase('gemv_fp8', 'fp8', { M: 1, K: 1536, N: 24576 }, 'q_b_proj, decode'),
      matmulCase('gemv_fp8', 'fp8', { M: 1, K: 16384, N: 7168 }, 'o_proj, decode'),
      matmulCase('gemm_fp8', 'fp8', { M: 128, K: 7168, N: 1536 }, 'q_a_proj, prefill chunk'),
      matmulCase('gemm_fp8', 'f32', { M: 128, K: 7168, N: 1536 }, 'same on f32 weights: the FP8 decode cost'),
      matmulCase('gemm_fp8', 'fp8', { M: 512, K: 7168, N: 1536 }, 'q_a_proj, prefill chunk'),
    );
  }
  if (small) {
    cases.push(
      matmulCase('gemv_fp8', 'fp8', { M: 1, K: 128, N: 288 }, 'fixture kv_a_proj_with_mqa'),
      matmulCase('gemm_fp8', 'fp8', { M: 130, K: 256, N: 384 }, 'fixture kv_b_proj, 130-token prompt'),
    );
  }
  cases.push(...layerCases({ small, v3 }));
  return cases;
}

export interface CaseProgress {
  /** 0-based index of the case about to run, of `total`. */
  index: number;
  total: number;
  name: string;
  shape: Record<string, number>;
}

export interface RunOptions {
  shapes?: ShapeSet;
  runs?: number;
  /** Fewer runs and smaller ceiling probes: a quick look, not figures to record. */
  quick?: boolean;
  peers?: boolean;
  onProgress?: (line: string) => void;
  /** Called before each timed case (the kernel cases, then the FP8 decode-cost pairs): for a progress bar. */
  onCase?: (progress: CaseProgress) => void;
  /** Only cases whose name contains this. */
  filter?: string;
  /**
   * Time budget per case and per peer (default 60 s): when one call takes longer than a tenth of
   * it (big shapes on a CPU adapter), fewer runs are timed, never fewer than 3. `runs` in each
   * result says how many.
   */
  maxSecondsPerCase?: number;
  /** Where measured variant choices are remembered (default: localStorage in a page, memory in Node). */
  variants?: VariantStore;
  /** Ends the run with an AbortError before the next case (the CLI's Ctrl-C / SIGTERM, the page's Stop). */
  signal?: AbortSignal;
}

export async function runKernelBench(gpu: Gpu, options: RunOptions = {}): Promise<BenchReport> {
  const log = options.onProgress ?? (() => {});
  const runs = options.runs ?? (options.quick ? 3 : 10);
  const budget = options.maxSecondsPerCase ?? 60;
  const variants = options.variants ?? defaultVariantStore();
  const cache = new PipelineCache(gpu.device);
  log('measuring the adapter ceilings (copy bandwidth, FMA throughput)');
  const ceilings = await measureCeilings(gpu, { quick: options.quick });
  log(`copy ${ceilings.copyGbps.toFixed(1)} GB/s, FMA ${ceilings.fmaGflops.toFixed(1)} GFLOP/s`);
  const kernels: KernelResult[] = [];
  const peers: PeerResult[] = [];
  let peer: MatmulPeer | undefined;
  if (options.peers !== false) {
    try {
      peer = await tfjsMatmulPeer(gpu);
    } catch (err) {
      log(`TF.js peer unavailable: ${(err as Error).message}`);
    }
  }
  const cases = benchCases(options.shapes ?? 'all').filter((c) => !options.filter || c.name.includes(options.filter));
  const shapeSet = options.shapes ?? 'all';
  const costShapes = [...(shapeSet !== 'small' ? [{ M: 128, K: 7168, N: 1536 }] : []), ...(shapeSet !== 'v3' ? [{ M: 130, K: 256, N: 384 }] : [])];
  const runCosts = !options.filter || 'gemm_fp8.decode_cost'.includes(options.filter);
  const total = cases.length + (runCosts ? costShapes.length : 0);
  for (const [index, c] of cases.entries()) {
    throwIfAborted(options.signal);
    options.onCase?.({ index, total, name: c.name, shape: c.shape });
    const shapeText = Object.entries(c.shape).map(([k, v]) => `${k}=${v}`).join(' ');
    const prepared = await c.prepare({ gpu, pipelines: cache }, variants);
    try {
      const runOnce = async () => {
        submitPass(gpu.device, prepared.call);
        await gpu.device.queue.onSubmittedWorkDone();
      };
      const checkStart = performance.now();
      const relError = await prepared.check(runOnce);
      const budgetRuns = (ms: number) => Math.max(3, Math.min(runs, Math.floor((1000 * budget) / Math.max(ms, 1e-3))));
      // A kernel that disagrees with its reference is not timed: its figure would mean nothing.
      if (!(relError < 1e-4)) throw new Error(`${c.name} [${shapeText}] disagrees with its CPU reference (relative error ${relError})`);
      // The check's time (one run plus the CPU reference) bounds one call's time from above.
      const t = await timeComputePass(gpu, (pass) => prepared.call.encode(pass), { runs: budgetRuns(performance.now() - checkStart), warmup: 1 });
      const { bytes, flops } = prepared.call;
      const gbps = bytes / (t.medianMs * 1e6);
      const gflops = flops / (t.medianMs * 1e6);
      kernels.push({
        name: c.name,
        shape: c.shape,
        note: c.note,
        variant: prepared.variant,
        median_ms: t.medianMs,
        wall_median_ms: t.wallMedianMs,
        runs: t.runs,
        timing: t.method,
        bytes,
        flops,
        gbps,
        gflops,
        copy_fraction: gbps / ceilings.copyGbps,
        fma_fraction: gflops / ceilings.fmaGflops,
        check_rel_error: relError,
      });
      log(`${c.name} [${shapeText}] ${t.medianMs.toFixed(3)} ms (${t.method}, ${t.runs} runs), ${gbps.toFixed(2)} GB/s, ${gflops.toFixed(2)} GFLOP/s, check ${relError.toExponential(1)}`);
      if (peer && c.peer) {
        const probe = await peer.time(c.shape as { M: number; K: number; N: number }, { runs: 1, warmup: 0 });
        const pt = await peer.time(c.shape as { M: number; K: number; N: number }, { runs: budgetRuns(probe.medianMs), warmup: 0 });
        peers.push({ name: peer.name, shape: c.shape, median_ms: pt.medianMs, runs: pt.runs, speedup_of_ours: pt.medianMs / t.wallMedianMs, versus: c.name });
        log(`  ${peer.name} [${shapeText}] ${pt.medianMs.toFixed(3)} ms (wall); ours ${t.wallMedianMs.toFixed(3)} ms wall: ${(pt.medianMs / t.wallMedianMs).toFixed(2)}x`);
      }
    } finally {
      prepared.destroy();
    }
  }
  peer?.dispose();

  const decodeCosts: DecodeCostResult[] = [];
  if (runCosts) {
    for (const [i, shape] of costShapes.entries()) {
      throwIfAborted(options.signal);
      options.onCase?.({ index: cases.length + i, total, name: 'gemm_fp8 FP8 decode cost', shape });
      const shapeText = Object.entries(shape).map(([k, v]) => `${k}=${v}`).join(' ');
      // Two calls a round; the suite's own FP8 figure for the shape, if it ran, sizes the rounds.
      const known = kernels.find((k) => k.name === 'gemm_fp8' && k.shape.M === shape.M && k.shape.K === shape.K && k.shape.N === shape.N);
      const rounds = known ? Math.max(3, Math.min(runs, Math.floor((1000 * budget) / (2 * known.median_ms)))) : runs;
      const cost = await measureDecodeCost(gpu, cache, variants, shape, rounds);
      decodeCosts.push(cost);
      log(`gemm_fp8 FP8 decode cost [${shapeText}] ${(100 * cost.cost).toFixed(1)}%: ${cost.fp8_median_ms.toFixed(3)} ms FP8 vs ${cost.f32_median_ms.toFixed(3)} ms f32 weights, ${cost.rounds} alternating rounds`);
    }
  }
  const a = gpu.adapter;
  return {
    adapter: { vendor: a.vendor, architecture: a.architecture, description: a.description, isSoftware: a.isSoftware, features: a.features },
    copy_gbps: ceilings.copyGbps,
    fma_gflops: ceilings.fmaGflops,
    kernels,
    peers,
    fp8_decode_cost: decodeCosts,
  };
}
