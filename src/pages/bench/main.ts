// The kernel benchmark page: the same suite as `webmoe bench --kernels`, on the visitor's GPU.
import { openBrowserGpu, WebmoeError, type Gpu } from '../../index.ts';
import { runKernelBench, type BenchReport, type ShapeSet } from '../../bench/suite.ts';

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
let gpu: Gpu | undefined;
let report: BenchReport | undefined;

const shape = (s: Record<string, number>) => Object.entries(s).map(([k, v]) => `${k}=${v}`).join(' ');

function row(cells: string[], header = false): HTMLTableRowElement {
  const tr = document.createElement('tr');
  for (const text of cells) {
    const cell = document.createElement(header ? 'th' : 'td');
    if (header) cell.scope = 'col';
    cell.textContent = text;
    tr.append(cell);
  }
  return tr;
}

function show(r: BenchReport): void {
  $('ceilings').textContent = `Measured here: buffer copy ${r.copy_gbps.toFixed(1)} GB/s, f32 FMA ${r.fma_gflops.toFixed(1)} GFLOP/s.`;
  $('results').replaceChildren(
    row(['kernel', 'shape', 'variant', 'ms', 'GB/s', 'GFLOP/s', '% copy', '% FMA', 'check'], true),
    ...r.kernels.map((k) =>
      row([k.name, shape(k.shape), k.variant ?? '', k.median_ms.toFixed(3), k.gbps.toFixed(2), k.gflops.toFixed(2), (100 * k.copy_fraction).toFixed(1), (100 * k.fma_fraction).toFixed(1), k.check_rel_error.toExponential(1)]),
    ),
  );
  $('peers').replaceChildren(
    row(['peer', 'shape', 'ms (wall)', 'ours, x faster', 'versus'], true),
    ...r.peers.map((p) => row([p.name, shape(p.shape), p.median_ms.toFixed(3), p.speedup_of_ours?.toFixed(2) ?? '', p.versus ?? ''])),
  );
  $('decode-cost').replaceChildren(
    row(['kernel', 'shape', 'variant', 'FP8 ms', 'f32 weights ms', 'rounds', 'cost'], true),
    ...r.fp8_decode_cost.map((c) => row([c.kernel, shape(c.shape), c.variant ?? '', c.fp8_median_ms.toFixed(3), c.f32_median_ms.toFixed(3), String(c.rounds), `${(100 * c.cost).toFixed(1)}%`])),
  );
  const chart = $('chart');
  chart.replaceChildren(
    ...r.kernels.map((k) => {
      const line = document.createElement('div');
      line.className = 'bar-row';
      const label = document.createElement('span');
      label.textContent = `${k.name} ${shape(k.shape)}`;
      const bars = document.createElement('div');
      bars.className = 'bars';
      for (const [kind, fraction] of [['copy', k.copy_fraction], ['fma', k.fma_fraction]] as const) {
        const bar = document.createElement('div');
        bar.className = `bar ${kind}`;
        bar.style.width = `${Math.min(100, 100 * fraction)}%`;
        bar.title = `${(100 * fraction).toFixed(1)}% of the ${kind === 'copy' ? 'copy bandwidth' : 'FMA'} ceiling`;
        bars.append(bar);
      }
      line.append(label, bars);
      return line;
    }),
  );
  $('results-box').hidden = false;
}

async function run(): Promise<void> {
  if (!gpu) return;
  const button = $<HTMLButtonElement>('run');
  button.disabled = true;
  $('error').hidden = true;
  try {
    report = await runKernelBench(gpu, {
      shapes: $<HTMLSelectElement>('shapes').value as ShapeSet,
      quick: $<HTMLInputElement>('quick').checked,
      onProgress: (line) => ($('progress').textContent = line),
    });
    show(report);
    $('progress').textContent = `Done: ${report.kernels.length} kernels, ${report.peers.length} peer runs.`;
    $('progress').dataset.state = 'done';
    $<HTMLButtonElement>('export').disabled = false;
  } catch (err) {
    $('error').hidden = false;
    $('error').textContent = err instanceof Error ? err.message : String(err);
  } finally {
    button.disabled = false;
  }
}

$('run').addEventListener('click', () => void run());
$('export').addEventListener('click', () => {
  if (!report) return;
  const a = document.createElement('a');
  a.href = URL.createObjectURL(new Blob([JSON.stringify(report, null, 2)], { type: 'application/json' }));
  a.download = `webmoe-bench-${report.adapter.vendor}-${report.adapter.architecture}.json`.replace(/\s+/g, '_');
  a.click();
  URL.revokeObjectURL(a.href);
});

try {
  gpu = await openBrowserGpu({ label: 'webmoe-bench' });
  const a = gpu.adapter;
  $('adapter').textContent = `${a.vendor} ${a.architecture} ${a.description}${a.isSoftware ? ' (software renderer)' : ''} · features: ${Object.entries(a.features).filter(([, on]) => on).map(([f]) => f).join(', ') || 'none'} · max storage binding ${(a.limits.maxStorageBufferBindingSize / 2 ** 20).toFixed(0)} MiB`;
  $('adapter').dataset.state = 'ready';
  if (new URLSearchParams(location.search).has('autorun')) void run();
} catch (err) {
  $('adapter').dataset.state = 'none';
  $('adapter').textContent = err instanceof WebmoeError ? err.message : String(err);
  $<HTMLButtonElement>('run').disabled = true;
}
