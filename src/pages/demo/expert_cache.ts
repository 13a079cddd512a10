// The GPU expert cache of a model whose routed experts live in CPU memory (the load settings'
// expert slots, or a GPU budget too small for every expert): a canvas with one row per offloaded
// MoE layer (the MTP layer included) and one cell per routed expert, filled where the expert sits
// in one of the layer's GPU slots now; above it, the figures since load. Hidden when every expert
// is resident. Data: EngineStats.offload (src/runtime/offload_stats.ts), after each answer.

import { formatBytes, type ModelInfo, type OffloadStats } from './lib.ts';
import { $, el } from './dom.ts';
import { drawExpertNumbers, prepareExpertCanvas } from './expert_canvas.ts';

const HEADER = 16; // px, expert numbers

/** The share of expert lookups that found the expert resident, floored to 0.1 % (a cache that missed at all never reads 100.0 %); undefined before any lookup. */
export function hitRate(hits: number, misses: number): string | undefined {
  const lookups = hits + misses;
  if (lookups === 0) return undefined;
  return `${(Math.floor((1000 * hits) / lookups) / 10).toFixed(1)}%`;
}

/** The line of figures above the picture, as [key, text] parts (the key names the span for tests and styles). */
export function offloadFigures(o: OffloadStats): [key: string, text: string][] {
  const n = (x: number) => x.toLocaleString('en-US');
  const rate = hitRate(o.expertHits, o.expertMisses);
  const lookups = o.expertHits + o.expertMisses;
  return [
    ['hit-rate', rate === undefined ? 'No expert looked up yet' : `Hit rate ${rate} of ${n(lookups)} lookup${lookups === 1 ? '' : 's'}`],
    ['misses', `${n(o.expertMisses)} miss${o.expertMisses === 1 ? '' : 'es'}`],
    ['uploaded', `${formatBytes(o.uploadedBytes)} uploaded`],
    ['memory', `${formatBytes(o.residentBytes)} on the GPU vs ${formatBytes(o.hostBytes)} of experts in CPU memory`],
    ['budget', o.budgetBytes === null ? 'no GPU budget (expert slots asked for)' : `GPU budget ${formatBytes(o.budgetBytes)}`],
    ['wait', `${n(Math.round(o.routeWaitMs))} ms waiting for router choices`],
  ];
}

export class ExpertCache {
  private offload: OffloadStats | null = null;
  private pending = 0;
  private readonly canvas = $<HTMLCanvasElement>('expert-cache-canvas');
  private readonly resize = new ResizeObserver(() => this.schedule());

  constructor(private readonly info: ModelInfo) {
    this.resize.observe($('expert-cache-frame'));
    $('expert-cache-box').hidden = true;
  }

  /** The engine's offload figures now; null (or a remote engine's undefined): every expert is resident, the box is hidden. */
  show(offload: OffloadStats | null | undefined): void {
    this.offload = offload ?? null;
    const box = $('expert-cache-box');
    box.hidden = this.offload === null;
    if (!this.offload) return;
    $('expert-cache-figures').replaceChildren(
      ...offloadFigures(this.offload).flatMap(([key, text], i) => [...(i > 0 ? [' · '] : []), el('span', text, { 'data-figure': key })]),
    );
    this.schedule();
  }

  dispose(): void {
    this.resize.disconnect();
    cancelAnimationFrame(this.pending);
    $('expert-cache-box').hidden = true;
  }

  private schedule(): void {
    cancelAnimationFrame(this.pending);
    this.pending = requestAnimationFrame(() => this.draw());
  }

  private draw(): void {
    const offload = this.offload;
    if (!offload) return;
    const E = this.info.config.n_routed_experts;
    const rows = offload.layers;
    const width = Math.max(200, $('expert-cache-frame').clientWidth);
    const gutter = Math.round(Math.min(96, width * 0.25));
    const cellW = (width - gutter) / E;
    const cellH = rows.length <= 16 ? 14 : rows.length <= 40 ? 10 : 6;
    const height = HEADER + rows.length * cellH;
    const canvas = prepareExpertCanvas(this.canvas, width, height);
    const { ctx, ink, accent } = canvas;

    drawExpertNumbers(canvas, E, gutter, cellW, HEADER);

    let filled = 0;
    rows.forEach(({ layer, slots }, r) => {
      const resident = new Set(slots.filter((e) => e >= 0));
      filled += resident.size;
      const y = HEADER + r * cellH;
      if (cellH >= 8) {
        ctx.globalAlpha = 1;
        ctx.fillStyle = ink;
        ctx.textAlign = 'left';
        ctx.fillText(this.layerName(layer), 0, y + cellH / 2, gutter * 0.5);
        ctx.textAlign = 'right';
        ctx.fillText(`${resident.size}/${slots.length}`, gutter - 4, y + cellH / 2, gutter * 0.5 - 6);
      }
      // Whole pixels with a gap between cells and rows, so neighbouring filled cells stay apart.
      for (let e = 0; e < E; e++) {
        const x0 = Math.round(gutter + e * cellW);
        const w = Math.round(gutter + (e + 1) * cellW) - x0;
        const on = resident.has(e);
        ctx.globalAlpha = on ? 1 : 0.08;
        ctx.fillStyle = on ? accent : ink;
        ctx.fillRect(x0, y + 1, Math.max(1, w >= 3 ? w - 1 : w), Math.max(1, cellH - 2));
      }
    });
    ctx.globalAlpha = 1;
    this.describe(offload, filled);
  }

  /** "L3", or "MTP" for the multi-token prediction layer (indexed after the model's layers). */
  private layerName(layer: number): string {
    return layer >= this.info.config.num_hidden_layers ? 'MTP' : `L${layer}`;
  }

  /** Sizes the canvas for the device's pixel ratio; returns a context drawing in CSS pixels. */
  /** The picture in words, for screen readers and the legend. */
  private describe(offload: OffloadStats, filled: number): void {
    const E = this.info.config.n_routed_experts;
    const S = offload.expertSlots;
    const L = offload.layers.length;
    const hasMtp = offload.layers.some(({ layer }) => layer >= this.info.config.num_hidden_layers);
    this.canvas.dataset.layers = String(L);
    this.canvas.dataset.filled = String(filled);
    this.canvas.setAttribute('aria-label', `GPU expert cache: ${S} of ${E} experts per layer in ${L} layers; ${filled} of ${S * L} slots hold an expert`);
    $('expert-cache-legend').textContent =
      `Rows: the MoE layers whose routed experts are kept in CPU memory${hasMtp ? ' (MTP: the multi-token prediction layer)' : ''}, with their slots in use; ` +
      `columns: the ${E} routed experts. A filled cell: the expert is in ${S === 1 ? 'the layer’s GPU slot' : `one of the layer’s ${S} GPU slots`} now. ` +
      'Each step uploads the experts its router chose that are not there, in place of the ones used least often lately.';
  }
}
