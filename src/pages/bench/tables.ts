// The benchmark page's tables. Each cell carries its column's name (data-label), so that on a
// narrow screen the stylesheet turns every row into a card of "name: value" lines instead of a
// table wider than the screen; every number has its unit in its own cell.

import type { BenchReport } from '../../bench/suite.ts';
import { el } from '../demo/dom.ts';
import { gbps, gflops, ms, percent, shapeText, sig3, times } from './format.ts';

export interface Column {
  label: string;
  /** Right-aligned figures (with units) rather than text. */
  figure?: boolean;
}

/** A cell: its text, or text with a second, smaller line (a note under a kernel's name). */
export type Cell = string | { text: string; note?: string };

export function fillTable(table: HTMLTableElement, columns: Column[], rows: Cell[][]): void {
  const head = el('thead');
  const tr = el('tr');
  for (const c of columns) tr.append(el('th', c.label, { scope: 'col', ...(c.figure ? { class: 'figure' } : {}) }));
  head.append(tr);
  const body = el('tbody');
  for (const row of rows) {
    const line = el('tr');
    row.forEach((cell, i) => {
      const { text, note } = typeof cell === 'string' ? { text: cell, note: undefined } : cell;
      const td = el('td', text, { 'data-label': columns[i].label, ...(columns[i].figure ? { class: 'figure' } : {}) });
      if (note) td.append(el('span', note, { class: 'note' }));
      line.append(td);
    });
    body.append(line);
  }
  table.classList.add('cards');
  table.replaceChildren(head, body);
}

export function kernelsTable(table: HTMLTableElement, r: BenchReport): void {
  fillTable(
    table,
    [{ label: '#' }, { label: 'kernel' }, { label: 'shape' }, { label: 'time', figure: true }, { label: 'bandwidth', figure: true }, { label: 'compute', figure: true }, { label: 'of copy', figure: true }, { label: 'of FMA', figure: true }, { label: 'check', figure: true }],
    r.kernels.map((k, i) => [
      String(i + 1),
      { text: k.name, note: [k.variant, k.note].filter(Boolean).join(' · ') || undefined },
      shapeText(k.shape),
      { text: ms(k.median_ms), note: `${k.timing === 'timestamp' ? 'GPU timestamps' : 'wall clock'}, ${k.runs} runs` },
      gbps(k.gbps),
      gflops(k.gflops),
      percent(k.copy_fraction),
      percent(k.fma_fraction),
      `${k.check_rel_error === 0 ? '0' : k.check_rel_error.toExponential(1)} rel.`,
    ]),
  );
}

export function kernelPeerTable(table: HTMLTableElement, r: BenchReport): void {
  fillTable(
    table,
    [{ label: 'peer' }, { label: 'shape' }, { label: 'peer time', figure: true }, { label: 'ours', figure: true }, { label: 'ours, faster by', figure: true }],
    r.peers.map((p) => {
      const ours = p.speedup_of_ours ? p.median_ms / p.speedup_of_ours : undefined;
      return [p.name, shapeText(p.shape), { text: ms(p.median_ms), note: `wall clock, ${p.runs} runs` }, { text: ours === undefined ? '–' : ms(ours), note: p.versus }, p.speedup_of_ours === undefined ? '–' : times(p.speedup_of_ours)];
    }),
  );
}

export function decodeCostTable(table: HTMLTableElement, r: BenchReport): void {
  fillTable(
    table,
    [{ label: 'kernel' }, { label: 'shape' }, { label: 'FP8 weights', figure: true }, { label: 'f32 weights', figure: true }, { label: 'rounds', figure: true }, { label: 'cost of the FP8 decode', figure: true }],
    r.fp8_decode_cost.map((c) => [{ text: c.kernel, note: c.variant }, shapeText(c.shape), ms(c.fp8_median_ms), ms(c.f32_median_ms), `${c.rounds} rounds`, `${c.cost >= 0 ? '+' : ''}${sig3(100 * c.cost)} %`]),
  );
}

/** Each kernel's two fractions of the ceilings as bars, with the numbers beside them. */
export function ceilingBars(list: HTMLElement, r: BenchReport): void {
  list.replaceChildren(
    ...r.kernels.map((k, i) => {
      const item = el('li', '', { class: 'ceiling-row' });
      item.append(el('span', `#${i + 1} ${k.name} ${shapeText(k.shape)}`, { class: 'ceiling-label' }));
      for (const [kind, fraction, name] of [['copy', k.copy_fraction, 'of copy'], ['fma', k.fma_fraction, 'of FMA']] as const) {
        const track = el('span', '', { class: 'track', 'aria-hidden': 'true' });
        const bar = el('span', '', { class: `fill ${kind}` });
        bar.style.width = `${Math.min(100, 100 * fraction)}%`;
        track.append(bar);
        item.append(track, el('span', `${percent(fraction)} ${name}`, { class: `ceiling-value ${kind}` }));
      }
      return item;
    }),
  );
}
