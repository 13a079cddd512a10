// The roofline of one run, in plain SVG: each kernel at its arithmetic intensity (FLOPs per byte
// it must move) and achieved GFLOP/s, under the two ceilings measured in the same run: the copy
// bandwidth (the diagonal, GFLOP/s = GB/s × FLOP/B) and the f32 FMA throughput (the flat roof).
// Log axes, one decade per grid line; hovering a point (its SVG <title>) gives its numbers. A point
// far below the roof is a kernel with room to grow; where it sits left or right of the knee says
// whether memory or arithmetic bounds it.

import type { BenchReport, KernelResult } from '../../bench/suite.ts';
import { gbps, gflops, percent, shapeText, sig3 } from './format.ts';

export interface RooflinePoint {
  /** 1-based, as the results table numbers its rows. */
  number: number;
  kernel: KernelResult;
  intensity: number;
  cx: number;
  cy: number;
  title: string;
}

export interface Roofline {
  width: number;
  height: number;
  plot: { left: number; top: number; right: number; bottom: number };
  points: RooflinePoint[];
  /** The ceilings as one polyline: the bandwidth diagonal up to the knee, then the FMA roof. */
  roof: { x: number; y: number }[];
  knee: number;
  xTicks: { value: number; x: number }[];
  yTicks: { value: number; y: number }[];
}

const MARGIN = { left: 64, right: 20, top: 16, bottom: 44 };

/** The chart's geometry (no DOM): log10 scales over the points and both ceilings. */
export function rooflineModel(report: Pick<BenchReport, 'kernels' | 'copy_gbps' | 'fma_gflops'>, width = 720, height = 420): Roofline {
  const plot = { left: MARGIN.left, top: MARGIN.top, right: width - MARGIN.right, bottom: height - MARGIN.bottom };
  const knee = report.fma_gflops / report.copy_gbps;
  const raw = report.kernels.map((k) => ({ k, intensity: k.bytes > 0 ? k.flops / k.bytes : 0 }));
  const positive = (xs: number[]) => xs.filter((x) => x > 0 && Number.isFinite(x));
  const intensities = positive(raw.map((p) => p.intensity));
  const rates = positive(raw.map((p) => p.k.gflops));
  // Decades that hold every point, the knee, and the roof's height, with room on each side.
  const x0 = decadeBelow(Math.min(knee, ...intensities) / 2);
  const x1 = decadeAbove(Math.max(knee, ...intensities) * 2);
  const y0 = decadeBelow(Math.min(report.fma_gflops, ...rates) / 2);
  const y1 = decadeAbove(report.fma_gflops * 2);
  const sx = (v: number) => plot.left + ((Math.log10(clamp(v, x0, x1)) - Math.log10(x0)) / (Math.log10(x1) - Math.log10(x0))) * (plot.right - plot.left);
  const sy = (v: number) => plot.bottom - ((Math.log10(clamp(v, y0, y1)) - Math.log10(y0)) / (Math.log10(y1) - Math.log10(y0))) * (plot.bottom - plot.top);
  const points = raw.map(({ k, intensity }, i): RooflinePoint => ({
    number: i + 1,
    kernel: k,
    intensity,
    cx: sx(intensity),
    cy: sy(k.gflops),
    title:
      `#${i + 1} ${k.name} ${shapeText(k.shape)}${k.variant ? ` (${k.variant})` : ''}: ${gbps(k.gbps)}, ${gflops(k.gflops)}, ` +
      `${sig3(intensity)} FLOP/B; ${percent(k.copy_fraction)} of the copy ceiling, ${percent(k.fma_fraction)} of the FMA ceiling`,
  }));
  // The diagonal starts where it enters the plot (at x0, or lower left at y0).
  const start = Math.max(x0, y0 / report.copy_gbps);
  const roof = [
    { x: sx(start), y: sy(report.copy_gbps * start) },
    { x: sx(knee), y: sy(report.fma_gflops) },
    { x: sx(x1), y: sy(report.fma_gflops) },
  ];
  return { width, height, plot, points, roof, knee, xTicks: decades(x0, x1).map((value) => ({ value, x: sx(value) })), yTicks: decades(y0, y1).map((value) => ({ value, y: sy(value) })) };
}

const SVG = 'http://www.w3.org/2000/svg';

function svg<K extends keyof SVGElementTagNameMap>(tag: K, attributes: Record<string, string | number>, text?: string): SVGElementTagNameMap[K] {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

/**
 * Draws the roofline into `target` (an <svg>), replacing what it held. The drawing is as wide as
 * the element (within 320..720 units), so that its text stays legible on a phone; call again on resize.
 */
export function drawRoofline(target: SVGSVGElement, report: BenchReport): void {
  const width = Math.round(Math.min(720, Math.max(320, target.clientWidth || 720)));
  const m = rooflineModel(report, width, width < 520 ? Math.round(width * 0.85) : 420);
  const { plot } = m;
  target.setAttribute('viewBox', `0 0 ${m.width} ${m.height}`);
  target.setAttribute('aria-label', `Roofline of ${m.points.length} kernels against copy ${gbps(report.copy_gbps)} and FMA ${gflops(report.fma_gflops)}`);
  const parts: SVGElement[] = [svg('rect', { x: plot.left, y: plot.top, width: plot.right - plot.left, height: plot.bottom - plot.top, class: 'frame' })];
  for (const t of m.xTicks) {
    parts.push(svg('line', { x1: t.x, x2: t.x, y1: plot.top, y2: plot.bottom, class: 'grid' }));
    parts.push(svg('text', { x: t.x, y: plot.bottom + 16, class: 'tick', 'text-anchor': 'middle' }, sig3(t.value)));
  }
  for (const t of m.yTicks) {
    parts.push(svg('line', { x1: plot.left, x2: plot.right, y1: t.y, y2: t.y, class: 'grid' }));
    parts.push(svg('text', { x: plot.left - 6, y: t.y + 4, class: 'tick', 'text-anchor': 'end' }, sig3(t.value)));
  }
  parts.push(
    svg('text', { x: (plot.left + plot.right) / 2, y: m.height - 6, class: 'axis', 'text-anchor': 'middle' }, m.width < 520 ? 'FLOP per byte moved' : 'arithmetic intensity (FLOP per byte moved)'),
    svg('text', { x: 14, y: (plot.top + plot.bottom) / 2, class: 'axis', 'text-anchor': 'middle', transform: `rotate(-90 14 ${(plot.top + plot.bottom) / 2})` }, 'achieved GFLOP/s'),
  );
  const roof = svg('polyline', { points: m.roof.map((p) => `${p.x},${p.y}`).join(' '), class: 'roof' });
  roof.append(svg('title', {}, `ceilings measured in this run: copy ${gbps(report.copy_gbps)}, FMA ${gflops(report.fma_gflops)}; knee at ${sig3(m.knee)} FLOP/B`));
  parts.push(
    roof,
    svg('text', { x: m.roof[1].x + 6, y: m.roof[1].y - 6, class: 'roof-label' }, `FMA ${gflops(report.fma_gflops)}`),
    svg('text', { x: m.roof[0].x + 6, y: m.roof[0].y - 8, class: 'roof-label' }, `copy ${gbps(report.copy_gbps)}`),
  );
  for (const p of m.points) {
    const group = svg('g', { class: 'point', 'data-kernel': p.kernel.name, 'data-number': p.number, tabindex: 0 });
    group.append(svg('title', {}, p.title), svg('circle', { cx: p.cx, cy: p.cy, r: 5 }), svg('text', { x: p.cx + 7, y: p.cy + 4, class: 'point-label' }, String(p.number)));
    parts.push(group);
  }
  target.replaceChildren(...parts);
}

function clamp(v: number, lo: number, hi: number): number {
  return Math.min(hi, Math.max(lo, v));
}

function decadeBelow(v: number): number {
  return 10 ** Math.floor(Math.log10(v));
}

function decadeAbove(v: number): number {
  return 10 ** Math.ceil(Math.log10(v));
}

function decades(lo: number, hi: number): number[] {
  const out: number[] = [];
  for (let e = Math.round(Math.log10(lo)); e <= Math.round(Math.log10(hi)); e++) out.push(10 ** e);
  return out;
}
