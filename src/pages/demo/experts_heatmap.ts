// Which routed experts processed each token of the last answer: a canvas with tokens as rows and
// experts as columns, for one MoE layer (a filled cell: chosen) or all of them (the shade: how
// many layers chose it), and below, how many tokens each expert took. Data: GenerateChunk.experts.

import type { Engine, ModelInfo, TokenExperts } from './lib.ts';
import { $, el } from './dom.ts';
import { drawExpertNumbers, prepareExpertCanvas } from './expert_canvas.ts';

const ALL = 'all';
const HEADER = 16; // px, expert numbers
const USAGE = 32; // px, tokens-per-expert bars
const GAP = 6;

export class ExpertsHeatmap {
  private rows: TokenExperts[] = [];
  private readonly labels = new Map<number, string>();
  private pending = 0;
  private readonly canvas = $<HTMLCanvasElement>('experts-canvas');
  private readonly select = $<HTMLSelectElement>('experts-layer');
  private readonly resize = new ResizeObserver(() => this.schedule());
  private readonly onChange = () => this.schedule();

  constructor(
    private readonly engine: Engine,
    private readonly info: ModelInfo,
  ) {
    const layers = info.moeLayers.map((L, i) => el('option', `layer ${L}`, { value: String(i) }));
    this.select.replaceChildren(...layers, el('option', `all ${info.moeLayers.length} MoE layers`, { value: ALL }));
    this.select.value = info.moeLayers.length > 0 ? '0' : ALL;
    this.select.addEventListener('change', this.onChange);
    this.resize.observe($('experts-frame'));
    $('experts-box').hidden = info.moeLayers.length === 0;
    this.canvas.dataset.tokens = '0';
    this.schedule();
  }

  /** A new answer. */
  clear(): void {
    this.rows = [];
    this.schedule();
  }

  add(tokens: TokenExperts[]): void {
    this.rows.push(...tokens);
    void this.fetchLabels(tokens.map((t) => t.token));
    this.schedule();
  }

  dispose(): void {
    this.resize.disconnect();
    this.select.removeEventListener('change', this.onChange);
    cancelAnimationFrame(this.pending);
  }

  /** Token texts for the row labels (the engine's tokenizer is in its Worker). */
  private async fetchLabels(ids: number[]): Promise<void> {
    const missing = [...new Set(ids)].filter((id) => !this.labels.has(id));
    for (const id of missing) this.labels.set(id, `#${id}`);
    const texts = await Promise.all(missing.map((id) => this.engine.detokenize([id]).catch(() => `#${id}`)));
    missing.forEach((id, i) => this.labels.set(id, printable(texts[i])));
    this.schedule();
  }

  private schedule(): void {
    cancelAnimationFrame(this.pending);
    this.pending = requestAnimationFrame(() => this.draw());
  }

  private draw(): void {
    const E = this.info.config.n_routed_experts;
    const layers = this.select.value === ALL ? this.info.moeLayers.map((_, i) => i) : [Number(this.select.value)];
    const rows = this.rows;
    // counts[r][e]: how many of the shown layers sent token r to expert e.
    const counts = rows.map((row) => {
      const c = new Uint16Array(E);
      for (const i of layers) for (const e of row.experts[i] ?? []) c[e]++;
      return c;
    });
    const perExpert = new Uint32Array(E);
    for (const c of counts) c.forEach((n, e) => (perExpert[e] += n));

    const width = Math.max(200, $('experts-frame').clientWidth);
    const gutter = Math.round(Math.min(72, width * 0.2));
    const cellW = (width - gutter) / E;
    const cellH = rows.length <= 40 ? 14 : rows.length <= 120 ? 8 : 4;
    const height = HEADER + rows.length * cellH + GAP + USAGE;
    const canvas = prepareExpertCanvas(this.canvas, width, height);
    const { ctx, ink, accent } = canvas;

    drawExpertNumbers(canvas, E, gutter, cellW, HEADER);

    // One row per token: a faint grid cell, filled by the share of shown layers that chose it.
    rows.forEach((row, r) => {
      const y = HEADER + r * cellH;
      ctx.textAlign = 'right';
      ctx.fillStyle = ink;
      if (cellH >= 8) ctx.fillText(this.labels.get(row.token) ?? '', gutter - 4, y + cellH / 2, gutter - 6);
      for (let e = 0; e < E; e++) {
        const n = counts[r][e];
        ctx.globalAlpha = n === 0 ? 0.08 : 0.25 + (0.75 * n) / layers.length;
        ctx.fillStyle = n === 0 ? ink : accent;
        ctx.fillRect(gutter + e * cellW + 0.5, y + 0.5, Math.max(1, cellW - 1), Math.max(1, cellH - 1));
      }
      ctx.globalAlpha = 1;
    });

    // Tokens per expert: a skewed row means a few experts did most of the work.
    const most = Math.max(1, ...perExpert);
    const base = HEADER + rows.length * cellH + GAP + USAGE;
    ctx.fillStyle = accent;
    perExpert.forEach((n, e) => {
      const h = ((USAGE - 2) * n) / most;
      ctx.fillRect(gutter + e * cellW + 0.5, base - h, Math.max(1, cellW - 1), h);
    });
    ctx.fillStyle = ink;
    ctx.textAlign = 'right';
    ctx.fillText('per expert', gutter - 4, base - USAGE / 2, gutter - 6);

    this.describe(layers, rows.length, perExpert);
  }

  /** Sizes the canvas for the device's pixel ratio; returns a context drawing in CSS pixels. */
  /** The same picture in words, for screen readers and the legend. */
  private describe(layers: number[], tokens: number, perExpert: Uint32Array): void {
    const K = this.info.config.num_experts_per_tok;
    const E = this.info.config.n_routed_experts;
    const which = layers.length === 1 ? `layer ${this.info.moeLayers[layers[0]]}` : `all ${layers.length} MoE layers`;
    const top = [...perExpert.keys()].sort((a, b) => perExpert[b] - perExpert[a]).slice(0, 3).filter((e) => perExpert[e] > 0);
    this.canvas.dataset.tokens = String(tokens);
    this.canvas.dataset.layer = this.select.value;
    this.canvas.setAttribute(
      'aria-label',
      tokens === 0 ? 'No answer yet' : `Experts chosen in ${which} for ${tokens} tokens; busiest: ${top.map((e) => `expert ${e} (${perExpert[e]})`).join(', ')}`,
    );
    $('experts-legend').textContent =
      `Rows: the answer's tokens, columns: the ${E} routed experts; each token goes to ${K} of them per MoE layer (the shared expert always runs). ` +
      (layers.length === 1 ? 'A filled cell: the expert was chosen in this layer.' : `Darker: chosen in more of the ${layers.length} layers.`) +
      ' Bars at the bottom: tokens per expert.';
  }
}

/** A token's text as a short visible label. */
function printable(text: string): string {
  const shown = text.replace(/\n/g, '⏎').replace(/\t/g, '⇥').replace(/^ /, '·');
  return shown.length > 8 ? `${shown.slice(0, 7)}…` : shown || '∅';
}
