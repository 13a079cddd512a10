// The latent cache next to multi-head attention's: for the tokens the engine holds now, the bytes
// MLA's compressed latent takes, the bytes its sessions have allocated (whole pages), and what
// per-head keys and values would take. Drawn as bars of one scale, each with its number.

import { formatBytes, type EngineStats, type ModelInfo } from './lib.ts';
import { $, el } from './dom.ts';

export function drawCacheChart(info: ModelInfo, stats: EngineStats): void {
  const { latent, mha } = info.cacheBytesPerToken;
  const tokens = stats.cachedTokens;
  const bars: [label: string, bytes: number, kind: string][] = [
    [`MLA latent cache in use: ${tokens} tokens × ${formatBytes(latent)}`, tokens * latent, 'latent'],
    ['MLA cache allocated (whole pages)', stats.cacheBytes, 'allocated'],
    [`Multi-head attention K and V for the same tokens: × ${formatBytes(mha)}`, tokens * mha, 'mha'],
  ];
  const most = Math.max(1, ...bars.map(([, bytes]) => bytes));
  const items = bars.map(([label, bytes, kind]) => {
    const item = el('li', '', { 'data-kind': kind, 'data-bytes': String(bytes) });
    const bar = el('span', '', { class: `bar bar-${kind}`, 'aria-hidden': 'true' });
    bar.style.width = `${(100 * bytes) / most}%`;
    item.append(el('span', label, { class: 'bar-label' }), el('span', formatBytes(bytes), { class: 'bar-value' }), bar);
    return item;
  });
  const note = tokens > 0 ? `Multi-head attention would need ${(mha / latent).toFixed(1)}× the memory of the latent cache.` : 'No tokens cached yet: send a message.';
  $('cache-chart').replaceChildren(...items, el('li', note, { class: 'bar-note' }));
  $('cache-box').hidden = false;
}
