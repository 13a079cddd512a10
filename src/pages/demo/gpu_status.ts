// The GPU line at the top: the adapter this page gets, and one of our kernels (RMSNorm on odd
// shapes) checked against its CPU reference, so a broken driver shows up here and not as wrong
// text later. A software adapter (SwiftShader, a fallback adapter) is said plainly: it works, but
// slowly. The engine opens its own device in its Worker; this one is closed after the check.

import { formatBytes, openBrowserGpu, selfCheck, WebmoeError, type AdapterReport } from './lib.ts';
import { $, el } from './dom.ts';

/** What to tell a visitor whose WebGPU runs on the CPU; undefined on a hardware adapter. */
export function softwareNote(adapter: Pick<AdapterReport, 'isSoftware'>): string | undefined {
  if (!adapter.isSoftware) return undefined;
  return 'Your browser is running WebGPU on the CPU (a software adapter, no GPU): expect a few tokens per second. A browser with hardware WebGPU on a computer with a GPU is much faster.';
}

/** Fills #gpu-status (data-state ready | none | failed); the adapter when WebGPU works here. */
export async function checkGpu(): Promise<AdapterReport | undefined> {
  const status = $('gpu-status');
  try {
    const gpu = await openBrowserGpu();
    const a = gpu.adapter;
    const features = Object.entries(a.features).filter(([, on]) => on).map(([f]) => f);
    status.textContent = `${a.vendor} ${a.architecture}${a.isSoftware ? ' (software renderer)' : ''} · features: ${features.join(', ') || 'none'} · max buffer ${formatBytes(a.limits.maxBufferSize)}`;
    const note = softwareNote(a);
    $('gpu-note').hidden = note === undefined;
    $('gpu-note').textContent = note ?? '';
    try {
      const check = await selfCheck(gpu);
      const line = el('span', ` · self-check ${check.kernel} [${check.shape.rows}x${check.shape.width}]: ${check.ok ? 'passed' : 'FAILED'} (relative error ${check.relError.toExponential(1)})`, {
        id: 'self-check',
        'data-ok': String(check.ok),
      });
      status.append(line);
      status.dataset.state = 'ready';
    } finally {
      gpu.destroy();
    }
    return a;
  } catch (err) {
    status.dataset.state = 'none';
    status.textContent = err instanceof WebmoeError ? err.message : `WebGPU failed to start: ${err instanceof Error ? err.message : String(err)}`;
    return undefined;
  }
}
