// What this GPU can hold of the checkpoint being loaded: the engine's memory plan (the weights as
// the loader lays them out, one conversation's latent cache at the engine's context, the working
// buffers of its plans), from config.json and the safetensors headers alone, as `webmoe inspect`
// prints it, against this adapter's buffer and binding limits. A browser does not tell a page how
// much memory its GPU has, so the plan is set against the limits it does tell.

import { filesDir, formatBytes, inspectCheckpoint, urlDir, type AdapterReport, type InspectReport } from './lib.ts';
import { $, el } from './dom.ts';

type Limits = Pick<AdapterReport['limits'], 'maxBufferSize' | 'maxStorageBufferBindingSize'>;

/** The plan's lines for this adapter; `fits` is false when a buffer the model needs is over a limit. */
export function describePlan(report: InspectReport, limits: Limits): { fits: boolean; lines: [label: string, text: string][] } {
  const plan = report.memory_plan.fp8;
  const binding = Math.min(limits.maxStorageBufferBindingSize, limits.maxBufferSize);
  const layout = report.binding_plan.fp8;
  if (!plan || 'refused' in layout) {
    return { fits: false, lines: [['This GPU', 'refused' in layout ? layout.refused : 'the weights cannot be laid out within this GPU’s bindings']] };
  }
  const context = report.memory_plan.max_context;
  const perPosition = plan.sessionCacheBytes / context;
  // Positions one cache buffer can hold (the cache is one buffer per session).
  const positions = Math.floor(limits.maxBufferSize / perPosition);
  const cacheFits = plan.sessionCacheBytes <= limits.maxBufferSize;
  const workFits = plan.largestActivation.bytes <= binding;
  const split = layout.split.length === 0 ? 'no tensor needs splitting' : `${layout.split.length} tensor${layout.split.length === 1 ? '' : 's'} split into ${layout.pieces} pieces to fit`;
  const lines: [string, string][] = [
    ['Needs on the GPU', `${formatBytes(plan.oneSessionBytes)} for one conversation of ${context.toLocaleString('en-US')} positions: weights ${formatBytes(plan.weightBytes)} (FP8) + latent cache ${formatBytes(plan.sessionCacheBytes)} + working buffers ${formatBytes(plan.activationBytes)}`],
    ['This GPU’s limits', `buffers up to ${formatBytes(limits.maxBufferSize)}, bindings up to ${formatBytes(binding)}: ${split}`],
    [
      'Latent cache',
      cacheFits
        ? `${formatBytes(perPosition)} per position; one buffer of this GPU holds ${positions.toLocaleString('en-US')} positions`
        : `${formatBytes(plan.sessionCacheBytes)} is over this GPU’s largest buffer: at most ${positions.toLocaleString('en-US')} positions fit`,
    ],
    ...offloadedLine(report),
    ['Working buffers', workFits ? `the largest (${plan.largestActivation.name}, ${formatBytes(plan.largestActivation.bytes)}) fits a binding` : `the ${plan.largestActivation.name} (${formatBytes(plan.largestActivation.bytes)}) is over this GPU’s largest binding`],
    ['Free memory', 'a page cannot see how much GPU memory is free: close other GPU-heavy tabs if loading runs out of memory'],
  ];
  return { fits: cacheFits && workFits, lines };
}

/** The least the model runs in: its routed experts in CPU memory, one per MoE layer on the GPU (Load settings). */
function offloadedLine(report: InspectReport): [string, string][] {
  const least = report.memory_plan.offloaded;
  if (!least?.offload) return [];
  return [['Least on the GPU', `${formatBytes(least.oneSessionBytes)} with the routed experts in CPU memory (${formatBytes(least.offload.hostBytes)}) and one per layer on the GPU: set a GPU budget or expert slots in Load settings`]];
}

/** Reads the headers of `model` and fills #memory-plan; a checkpoint that cannot be read is left to the load to report. */
export async function showMemoryPlan(model: string | ArrayLike<File>, adapter: AdapterReport, signal: AbortSignal): Promise<void> {
  const box = $('memory-box');
  box.hidden = true;
  const dir = typeof model === 'string' ? urlDir(model) : filesDir(model);
  let report: InspectReport;
  try {
    const binding = Math.min(adapter.limits.maxStorageBufferBindingSize, adapter.limits.maxBufferSize);
    report = await inspectCheckpoint(dir, { bindingLimitBytes: binding, signal });
  } catch {
    return;
  }
  if (signal.aborted) return;
  const { fits, lines } = describePlan(report, adapter.limits);
  $('memory-plan').replaceChildren(
    ...lines.map(([label, text]) => {
      const tr = el('tr');
      tr.append(el('th', label, { scope: 'row' }), el('td', text));
      return tr;
    }),
  );
  box.dataset.fits = String(fits);
  box.hidden = false;
}
