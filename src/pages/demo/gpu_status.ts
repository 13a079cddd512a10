// The GPU line at the top: the adapter this page gets, and one of our kernels (RMSNorm on odd
// shapes) checked against its CPU reference, so a broken driver shows up here and not as wrong
// text later. The engine opens its own device in its Worker; this one is closed after the check.

import { formatBytes, openBrowserGpu, selfCheck, WebmoeError } from './lib.ts';
import { $, el } from './dom.ts';

/** Fills #gpu-status (data-state ready | none | failed); true when WebGPU works here. */
export async function checkGpu(): Promise<boolean> {
  const status = $('gpu-status');
  try {
    const gpu = await openBrowserGpu();
    const a = gpu.adapter;
    const features = Object.entries(a.features).filter(([, on]) => on).map(([f]) => f);
    status.textContent = `${a.vendor} ${a.architecture}${a.isSoftware ? ' (software renderer)' : ''} · features: ${features.join(', ') || 'none'} · max buffer ${formatBytes(a.limits.maxBufferSize)}`;
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
    return true;
  } catch (err) {
    status.dataset.state = 'none';
    status.textContent = err instanceof WebmoeError ? err.message : `WebGPU failed to start: ${err instanceof Error ? err.message : String(err)}`;
    return false;
  }
}
