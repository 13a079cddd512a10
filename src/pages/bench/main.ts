// The benchmark page: the kernel suite of `webmoe bench --kernels`, the decode benchmark of
// `webmoe bench --decode` and the onnxruntime-web peer on the same model, on the visitor's GPU, with a progress bar, a roofline, tables that fit
// the screen, and the JSON export of both.
import { openBrowserGpu, WebmoeError, type Gpu } from '../../index.ts';
import { runKernelBench, type BenchReport, type ShapeSet } from '../../bench/suite.ts';
import type { DecodeReport } from '../../bench/decode_report.ts';
import { $ } from '../demo/dom.ts';
import { softwareNote } from '../demo/gpu_status.ts';
import { gbps, gflops, shapeText } from './format.ts';
import { drawRoofline } from './roofline.ts';
import { ceilingBars, decodeCostTable, kernelPeerTable, kernelsTable } from './tables.ts';
import { runDecode, showDecode } from './decode_view.ts';
import { parseExpertSlots } from './offload_rows.ts';
import type { PeerReport } from './peer_run.ts';
import type { PeerBuild } from './peer_view.ts';

const params = new URLSearchParams(location.search);
const MODEL = new URL(params.get('model') ?? '../models/webmoe-kjv-12m/', location.href).href;
let gpu: Gpu | undefined;
let report: BenchReport | undefined;
let decode: DecodeReport | undefined;
let peer: PeerReport | undefined;
/** One run at a time: the kernels and the decode step share the device. */
let busy = false;

const roofline = document.querySelector<SVGSVGElement>('#roofline')!;
// Redrawn at the width it gets (a phone's is narrower than the drawing's default).
new ResizeObserver(() => report && drawRoofline(roofline, report)).observe(roofline.parentElement!);

function show(r: BenchReport): void {
  $('ceilings').textContent = `Measured here: buffer copy ${gbps(r.copy_gbps)}, f32 FMA ${gflops(r.fma_gflops)}.`;
  $('results-box').hidden = false; // visible first, so the roofline is drawn at its width
  drawRoofline(roofline, r);
  kernelsTable($<HTMLTableElement>('results'), r);
  ceilingBars($('chart'), r);
  decodeCostTable($<HTMLTableElement>('decode-cost'), r);
  kernelPeerTable($<HTMLTableElement>('peers'), r);
  $('peers').hidden = r.peers.length === 0;
  $('kernel-peer-note').textContent = r.peers.length ? 'TF.js’s WebGPU matMul in f32 on the same device and shapes; both timed by the wall clock from submit to done.' : 'No peer ran (TF.js was unavailable or switched off).';
}

function setBusy(on: boolean): void {
  busy = on;
  $<HTMLButtonElement>('run').disabled = on || !gpu;
  $<HTMLButtonElement>('run-decode').disabled = on || !gpu;
  $<HTMLButtonElement>('run-peer').disabled = on || !gpu;
  $<HTMLButtonElement>('export').disabled = on || (!report && !decode && !peer);
}

function showFailure(err: unknown): void {
  $('error').hidden = false;
  $('error').textContent = err instanceof Error ? err.message : String(err);
}

async function runKernels(): Promise<void> {
  if (!gpu || busy) return;
  setBusy(true);
  $('error').hidden = true;
  const bar = $<HTMLProgressElement>('case-progress');
  const progress = $('progress');
  delete progress.dataset.state;
  $('progress-box').hidden = false;
  bar.value = 0;
  const started = performance.now();
  let current = '';
  try {
    report = await runKernelBench(gpu, {
      shapes: $<HTMLSelectElement>('shapes').value as ShapeSet,
      quick: $<HTMLInputElement>('quick').checked,
      onCase: ({ index, total, name, shape }) => {
        bar.max = total;
        bar.value = index;
        current = `${name} [${shapeText(shape)}]: case ${index + 1} of ${total}`;
      },
      onProgress: (line) => {
        const seconds = ((performance.now() - started) / 1000).toFixed(0);
        progress.textContent = current ? `${current} · ${seconds} s · ${line}` : line;
      },
    });
    bar.value = bar.max;
    show(report);
    progress.textContent = `Done in ${((performance.now() - started) / 1000).toFixed(0)} s: ${report.kernels.length} kernels, ${report.peers.length} peer runs.`;
    progress.dataset.state = 'done';
  } catch (err) {
    progress.dataset.state = 'failed';
    showFailure(err);
  } finally {
    setBusy(false);
  }
}

async function runDecodeBench(): Promise<void> {
  if (!gpu || busy) return;
  setBusy(true);
  $('error').hidden = true;
  const progress = $('decode-progress');
  delete progress.dataset.state;
  const started = performance.now();
  try {
    decode = await runDecode(gpu, MODEL, {
      quick: $<HTMLInputElement>('quick').checked,
      peers: $<HTMLInputElement>('decode-peer').checked,
      expertSlots: parseExpertSlots($<HTMLInputElement>('expert-slots').value),
      onProgress: (line) => (progress.textContent = `${line} · ${((performance.now() - started) / 1000).toFixed(0)} s`),
    });
    showDecode(decode);
    progress.textContent = `Done in ${((performance.now() - started) / 1000).toFixed(0)} s.`;
    progress.dataset.state = 'done';
  } catch (err) {
    progress.dataset.state = 'failed';
    progress.textContent = 'The decode benchmark failed.';
    showFailure(err);
  } finally {
    setBusy(false);
  }
}

async function runPeerBench(): Promise<void> {
  if (!gpu || busy) return;
  setBusy(true);
  $('error').hidden = true;
  const progress = $('peer-progress');
  delete progress.dataset.state;
  const started = performance.now();
  try {
    const { runPeer, showPeer } = await import('./peer_view.ts'); // onnxruntime-web loads only now
    peer = await runPeer(gpu, MODEL, {
      quick: $<HTMLInputElement>('quick').checked,
      build: $<HTMLSelectElement>('peer-build').value as PeerBuild,
      onProgress: (line) => (progress.textContent = `${line} · ${((performance.now() - started) / 1000).toFixed(0)} s`),
    });
    showPeer(peer);
    $('ort-peer-box').hidden = false;
    progress.textContent = `Done in ${((performance.now() - started) / 1000).toFixed(0)} s.`;
    progress.dataset.state = 'done';
  } catch (err) {
    progress.dataset.state = 'failed';
    progress.textContent = 'The peer benchmark failed.';
    showFailure(err);
  } finally {
    setBusy(false);
  }
}

$('run').addEventListener('click', () => void runKernels());
$('run-peer').addEventListener('click', () => void runPeerBench());
$('run-decode').addEventListener('click', () => void runDecodeBench());
$('export').addEventListener('click', () => {
  if (!report && !decode && !peer) return;
  // The kernel report as `bench --kernels --json` prints it, with the decode and peer reports beside it when they ran.
  const json = { ...(report ?? {}), ...(decode ? { decode } : {}), ...(peer ? { peer } : {}) };
  const adapter = gpu?.adapter;
  const a = document.createElement('a');
  a.href = URL.createObjectURL(new Blob([JSON.stringify(json, null, 2)], { type: 'application/json' }));
  a.download = `webmoe-bench-${adapter?.vendor ?? 'gpu'}-${adapter?.architecture ?? ''}.json`.replace(/\s+/g, '_');
  a.click();
  URL.revokeObjectURL(a.href);
});

setBusy(true);
try {
  gpu = await openBrowserGpu({ label: 'webmoe-bench' });
  const a = gpu.adapter;
  $('adapter').textContent = `${a.vendor} ${a.architecture} ${a.description}${a.isSoftware ? ' (software renderer)' : ''} · features: ${Object.entries(a.features).filter(([, on]) => on).map(([f]) => f).join(', ') || 'none'} · max storage binding ${(a.limits.maxStorageBufferBindingSize / 2 ** 20).toFixed(0)} MiB`;
  $('adapter').dataset.state = 'ready';
  const note = softwareNote(a);
  $('adapter-note').hidden = note === undefined;
  $('adapter-note').textContent = note ?? '';
  setBusy(false);
  if (params.has('autorun')) void runKernels();
} catch (err) {
  $('adapter').dataset.state = 'none';
  $('adapter').textContent = err instanceof WebmoeError ? err.message : String(err);
  setBusy(false);
}
