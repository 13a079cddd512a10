// The roofline's geometry: one point per kernel, where its intensity and GFLOP/s put it on log
// axes, under the diagonal of the copy bandwidth that bends into the FMA roof at the knee.

import { describe, expect, it } from 'vitest';
import type { KernelResult } from '../../bench/suite.ts';
import { rooflineModel } from './roofline.ts';

const kernel = (name: string, bytes: number, flops: number, ms: number): KernelResult => ({
  name, shape: { M: 1 }, median_ms: ms, wall_median_ms: ms, runs: 3, timing: 'timestamp', bytes, flops,
  gbps: bytes / (ms * 1e6), gflops: flops / (ms * 1e6), copy_fraction: 0, fma_fraction: 0, check_rel_error: 0,
});

describe('rooflineModel', () => {
  // copy 10 GB/s, FMA 100 GFLOP/s: the knee at 10 FLOP/B.
  const report = { copy_gbps: 10, fma_gflops: 100, kernels: [kernel('gemv', 1e6, 2e6, 1), kernel('gemm', 1e6, 1e9, 20), kernel('copy-only', 1e6, 0, 1)] };
  const m = rooflineModel(report, 720, 420);

  it('places one point per kernel on log axes', () => {
    expect(m.points.map((p) => [p.number, p.kernel.name])).toEqual([[1, 'gemv'], [2, 'gemm'], [3, 'copy-only']]);
    // Decades: x from 1 (below 2/2) to 10,000 (above 1000 * 2); y from 1 (below 2/2) to 1000 (above 100 * 2).
    expect(m.xTicks.map((t) => t.value)).toEqual([1, 10, 100, 1000, 10000]);
    expect(m.yTicks.map((t) => t.value)).toEqual([1, 10, 100, 1000]);
    const [gemv, gemm, none] = m.points;
    const { left, right, top, bottom } = m.plot;
    expect(gemv.cx).toBeCloseTo(left + (Math.log10(2) / 4) * (right - left), 9); // 2 FLOP/B
    expect(gemv.cy).toBeCloseTo(bottom - (Math.log10(2) / 3) * (bottom - top), 9); // 2 GFLOP/s
    expect(gemm.cx).toBeCloseTo(left + (3 / 4) * (right - left), 9); // 1000 FLOP/B
    expect(gemm.cy).toBeCloseTo(bottom - (Math.log10(50) / 3) * (bottom - top), 9); // 50 GFLOP/s
    expect([none.cx, none.cy]).toEqual([left, bottom]); // no FLOPs: on the axes' corner, still one point
    expect(gemv.title).toMatch(/^#1 gemv M=1: 1 GB\/s, 2 GFLOP\/s, 2 FLOP\/B; /);
  });

  it('draws the ceilings: the copy diagonal up to the knee, then the FMA roof', () => {
    expect(m.knee).toBe(10);
    const [start, knee, end] = m.roof;
    expect(knee.x).toBeCloseTo(m.xTicks[1].x, 9);
    expect(knee.y).toBeCloseTo(m.yTicks[2].y, 9);
    expect(end).toEqual({ x: m.plot.right, y: knee.y });
    // 10 GB/s at 1 FLOP/B is 10 GFLOP/s: the diagonal enters at the left edge, one decade up.
    expect(start.x).toBeCloseTo(m.plot.left, 9);
    expect(start.y).toBeCloseTo(m.yTicks[1].y, 9);
  });
});
