// The page `npm start` serves: opens WebGPU, checks one kernel against its CPU reference, then
// loads a checkpoint (a URL or a local folder) into GPU memory with a progress bar and shows its
// summary. It uses the library exactly as an npm user would.

import {
  WebmoeError,
  ShardCache,
  filesDir,
  formatBytes,
  checkpointReport,
  openCheckpoint,
  type InspectReport,
  loadWeights,
  openBrowserGpu,
  selfCheck,
  urlDir,
  type CheckpointDir,
  type Gpu,
  type LoadedWeights,
} from './lib.ts';

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const DEFAULT_MODEL = new URL('models/tiny-random/', location.href).href;

let gpu: Gpu | undefined;
let loaded: LoadedWeights | undefined;
let loading: AbortController | undefined;

function showError(err: unknown): void {
  const box = $('error');
  box.hidden = false;
  box.textContent = err instanceof WebmoeError ? err.message : `Something went wrong: ${err instanceof Error ? err.message : String(err)}`;
  if (!(err instanceof WebmoeError)) console.error(err);
}

async function startGpu(): Promise<void> {
  const status = $('gpu-status');
  try {
    gpu = await openBrowserGpu();
    const a = gpu.adapter;
    const features = Object.entries(a.features).filter(([, on]) => on).map(([f]) => f);
    status.textContent = `${a.vendor} ${a.architecture}${a.isSoftware ? ' (software renderer)' : ''} · features: ${features.join(', ') || 'none'} · max buffer ${formatBytes(a.limits.maxBufferSize)}`;
    gpu.lost.then((e) => {
      status.textContent = e.message;
      status.dataset.state = 'lost';
    });
    const check = await selfCheck(gpu);
    const line = document.createElement('span');
    line.id = 'self-check';
    line.dataset.ok = String(check.ok);
    line.textContent = ` · self-check ${check.kernel} [${check.shape.rows}x${check.shape.width}]: ${check.ok ? 'passed' : 'FAILED'} (relative error ${check.relError.toExponential(1)})`;
    status.append(line);
    status.dataset.state = 'ready';
  } catch (err) {
    status.dataset.state = 'none';
    status.textContent = err instanceof WebmoeError ? err.message : String(err);
  }
}

async function load(dir: CheckpointDir): Promise<void> {
  $('error').hidden = true;
  if (!gpu) {
    showError(new Error('No GPU: see the message above.'));
    return;
  }
  loading?.abort();
  loaded?.destroy();
  loaded = undefined;
  const controller = (loading = new AbortController());
  const box = $('progress-box');
  const bar = $<HTMLProgressElement>('progress');
  const text = $('progress-text');
  box.hidden = false;
  $('cancel').hidden = false;
  $('summary-box').hidden = true;
  const started = performance.now();
  let fromCache = false;
  try {
    const checkpoint = await openCheckpoint(dir, { signal: controller.signal });
    const report = checkpointReport(checkpoint);
    loaded = await loadWeights(gpu.device, checkpoint, {
      signal: controller.signal,
      onProgress: (p) => {
        fromCache ||= p.fromCache === true;
        const seconds = (performance.now() - started) / 1000;
        bar.value = p.bytesTotal ? p.bytesDone / p.bytesTotal : 1;
        text.textContent = `${formatBytes(p.bytesDone)} of ${formatBytes(p.bytesTotal)} · ${formatBytes(p.bytesDone / Math.max(seconds, 1e-3))}/s${p.fromCache ? ' · from cache' : ''}`;
      },
    });
    const seconds = (performance.now() - started) / 1000;
    text.textContent = `Loaded ${formatBytes(loaded.bytesOnGpu)} into GPU memory in ${seconds.toFixed(2)} s${fromCache ? ' (from the browser cache)' : ' (from the network)'}.`;
    text.dataset.state = 'loaded';
    text.dataset.source = fromCache ? 'cache' : 'network';
    showSummary(report, loaded);
  } catch (err) {
    text.dataset.state = 'failed';
    showError(err);
  } finally {
    if (loading === controller) {
      loading = undefined;
      $('cancel').hidden = true;
    }
  }
}

function showSummary(r: InspectReport, w: LoadedWeights): void {
  const c = r.config;
  const n = (x: number) => x.toLocaleString('en-US');
  const rows: [string, string][] = [
    ['Source', `${r.source} (${r.layout}, ${r.files.length} file${r.files.length === 1 ? '' : 's'})`],
    ['Architecture', `${c.model_type}: hidden ${c.hidden_size}, ${c.num_hidden_layers} layers (${c.dense_layers} dense), ${c.num_attention_heads} heads, vocab ${n(c.vocab_size)}`],
    ['MLA', `q_lora_rank ${c.q_lora_rank ?? 'none'}, kv_lora_rank ${c.kv_lora_rank}, rope ${c.qk_rope_head_dim}, nope ${c.qk_nope_head_dim}, v ${c.v_head_dim}`],
    ['MoE', `${c.n_routed_experts} routed experts, top-${c.num_experts_per_tok} within ${c.topk_group} of ${c.n_group} groups, ${c.n_shared_experts} shared`],
    ['Parameters', `${n(r.params_total)} total · ${n(r.params_active)} active per token · ${n(r.params_mtp)} MTP`],
    ['Bytes by dtype', Object.entries(r.bytes_by_dtype).map(([d, b]) => `${d} ${formatBytes(b)}`).join(' · ')],
    ['KV cache per token', `latent ${n(r.latent_cache_bytes_per_token)} B vs multi-head ${n(r.mha_cache_bytes_per_token)} B (${(r.mha_cache_bytes_per_token / r.latent_cache_bytes_per_token).toFixed(1)}x smaller, bf16)`],
    ['On the GPU', `${w.buffers.size} buffers, ${formatBytes(w.bytesOnGpu)}`],
    ['Tensor check', r.missing.length + r.unexpected.length === 0 ? 'all present, none unexpected' : `missing: ${r.missing.join(', ') || 'none'}; unexpected: ${r.unexpected.join(', ') || 'none'}`],
  ];
  const table = $('summary');
  table.replaceChildren(
    ...rows.map(([k, v]) => {
      const tr = document.createElement('tr');
      const th = document.createElement('th');
      const td = document.createElement('td');
      th.scope = 'row';
      th.textContent = k;
      td.textContent = v;
      tr.append(th, td);
      return tr;
    }),
  );
  $('summary-box').hidden = false;
}

const cache = new ShardCache({ onWarning: (message) => console.warn(`[webmoe] ${message}`) });
$<HTMLInputElement>('model-url').value = new URLSearchParams(location.search).get('model') ?? DEFAULT_MODEL;
$('load-form').addEventListener('submit', (e) => {
  e.preventDefault();
  void load(cache.wrap(urlDir($<HTMLInputElement>('model-url').value)));
});
$<HTMLInputElement>('model-folder').addEventListener('change', (e) => {
  const files = (e.target as HTMLInputElement).files;
  if (files && files.length) void load(filesDir(files));
});
$('cancel').addEventListener('click', () => loading?.abort());

await startGpu();
if (gpu && new URLSearchParams(location.search).has('autoload')) void load(cache.wrap(urlDir($<HTMLInputElement>('model-url').value)));
