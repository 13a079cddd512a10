// Loading a checkpoint into an engine (in a Worker) with the load settings (GPU budget, expert
// slots), with a progress bar that shows bytes, the rate, and whether the bytes came from the
// browser's shard cache; Cancel aborts the load. After the load, a summary of the model from the
// engine's ModelInfo.

import { createEngine, formatBytes, shortName, type Engine, type EngineProgress, type ModelSource } from './lib.ts';
import { $, el } from './dom.ts';
import type { LoadSettings } from './settings.ts';

export type LoadedFrom = 'network' | 'cache' | 'file';

/**
 * Creates the engine for `model`, driving #progress-box; resolves when it is ready. `fromFiles`:
 * the bytes come from the visitor's disk, not the network or the cache.
 */
export async function loadEngine(model: ModelSource, fromFiles: boolean, signal: AbortSignal, settings: LoadSettings = {}): Promise<Engine> {
  const bar = $<HTMLProgressElement>('progress');
  const text = $('progress-text');
  $('progress-box').hidden = false;
  $('cancel').hidden = false;
  $('summary-box').hidden = true;
  bar.value = 0;
  text.textContent = 'Opening the checkpoint…';
  text.dataset.state = 'loading';
  delete text.dataset.source;
  const started = performance.now();
  let fromCache = false;
  const retryText = (p: EngineProgress) => (p.retrying ? ` · ${p.retrying.reason}: retry ${p.retrying.attempt + 1} of ${p.retrying.maxAttempts} in ${Math.round(p.retrying.delayMs / 1000)} s` : '');
  const onProgress = (p: EngineProgress) => {
    if (p.phase === 'files') text.textContent = `Opening the checkpoint…${retryText(p)}`;
    if (p.phase !== 'weights') return;
    fromCache ||= p.fromCache === true;
    bar.value = p.bytesTotal ? p.bytesDone / p.bytesTotal : 1;
    text.textContent = `${formatBytes(p.bytesDone)} of ${formatBytes(p.bytesTotal)} · ${formatBytes(p.bytesDone / seconds(started))}/s${p.fromCache ? ' · from the browser cache' : ''}${retryText(p)}`;
  };
  try {
    const engine = await createEngine({ model, ...settings, onProgress, signal });
    const source: LoadedFrom = fromFiles ? 'file' : fromCache ? 'cache' : 'network';
    const where = { file: 'from this computer', cache: 'from the browser cache', network: 'from the network' }[source];
    bar.value = 1;
    text.textContent = `Loaded ${shortName(engine.info.name)} in ${seconds(started).toFixed(1)} s (${where}).`;
    text.dataset.state = 'loaded';
    text.dataset.source = source;
    return engine;
  } catch (err) {
    text.dataset.state = signal.aborted ? 'cancelled' : 'failed';
    text.textContent = signal.aborted ? 'Loading cancelled.' : 'Loading failed.';
    throw err;
  } finally {
    $('cancel').hidden = true;
  }
}

/** The model's shape, parameters and cache sizes in #summary. */
export async function showSummary(engine: Engine): Promise<void> {
  const { info } = engine;
  const c = info.config;
  const stats = await engine.stats();
  const n = (x: number) => x.toLocaleString('en-US');
  const { latent, mha } = info.cacheBytesPerToken;
  const dense = c.num_hidden_layers - info.moeLayers.filter((L) => L < c.num_hidden_layers).length;
  const rows: [string, string][] = [
    ['Source', info.name],
    ['Architecture', `${c.model_type}: hidden ${c.hidden_size}, ${c.num_hidden_layers} layers (${dense} dense), ${c.num_attention_heads} heads, vocab ${n(c.vocab_size)}`],
    ['MLA', `q_lora_rank ${c.q_lora_rank ?? 'none'}, kv_lora_rank ${c.kv_lora_rank}, rope ${c.qk_rope_head_dim}, nope ${c.qk_nope_head_dim}, v ${c.v_head_dim}`],
    ['MoE', `${c.n_routed_experts} routed experts, top-${c.num_experts_per_tok} within ${c.topk_group} of ${c.n_group} groups, ${c.n_shared_experts} shared; MoE layers ${info.moeLayers.join(', ') || 'none'}`],
    ['Parameters', `${n(info.parameters)} total${info.hasMtp ? ' · MTP module for speculative decoding' : ' · no MTP module'}`],
    ['KV cache per token', `latent ${n(latent)} B vs multi-head ${n(mha)} B (${(mha / latent).toFixed(1)}x smaller)`],
    ['On the GPU', `${formatBytes(stats.weightBytes)} of weights on ${stats.adapter}, context up to ${n(stats.limits.maxContext)} tokens`],
    ['Tensor check', 'all present, none unexpected'],
  ];
  $('summary').replaceChildren(
    ...rows.map(([k, v]) => {
      const tr = el('tr');
      tr.append(el('th', k, { scope: 'row' }), el('td', v));
      return tr;
    }),
  );
  $('summary-box').hidden = false;
}

function seconds(since: number): number {
  return Math.max((performance.now() - since) / 1000, 1e-3);
}
