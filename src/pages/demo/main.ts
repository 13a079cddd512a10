// The page `npm start` serves: checks WebGPU, loads a checkpoint (the shipped one, a URL or a
// local folder) into an engine in a Worker, then chats with it and shows the model at work. It
// uses the library exactly as an npm user would (lib.ts).

import { NoWebGPUError, type Engine } from './lib.ts';
import { $ } from './dom.ts';
import { clearError, isAbort, showError } from './alert.ts';
import { checkGpu } from './gpu_status.ts';
import { loadEngine, showSummary } from './load.ts';
import { loadTemplate } from './template.ts';
import { ChatView } from './chat.ts';

const DEFAULT_MODEL = 'models/webmoe-kjv-12m/';
const params = new URLSearchParams(location.search);

let webgpu = false;
let engine: Engine | undefined;
let chat: ChatView | undefined;
let loading: AbortController | undefined;

/** Frees the current engine (its worker, GPU device and caches) and its chat. */
async function unload(): Promise<void> {
  chat?.dispose();
  chat = undefined;
  const old = engine;
  engine = undefined;
  await old?.unload();
}

/** Loads a checkpoint from a URL or a picked folder, replacing the engine the page had. */
async function load(model: string | FileList): Promise<void> {
  clearError();
  if (!webgpu) {
    showError(new NoWebGPUError('No model can run in this browser: WebGPU is missing (see the GPU line above).'));
    return;
  }
  loading?.abort();
  const controller = (loading = new AbortController());
  const { signal } = controller;
  try {
    await unload();
    // The page reads the chat template itself; a template that fails leaves plain-text chat.
    const template = loadTemplate(model, signal).catch((err: unknown) => (isAbort(err) || signal.aborted ? undefined : (showError(err), undefined)));
    const next = await loadEngine(model, typeof model !== 'string', signal);
    if (loading !== controller) {
      await next.unload(); // another load started meanwhile
      return;
    }
    engine = next;
    await showSummary(next);
    chat = new ChatView(next, await template, () => void dropLostEngine());
  } catch (err) {
    if (!isAbort(err) && !signal.aborted) showError(err);
  } finally {
    if (loading === controller) loading = undefined;
  }
}

/** The engine's device is gone: it cannot answer again; the visitor loads the model anew. */
async function dropLostEngine(): Promise<void> {
  const text = $('progress-text');
  text.textContent = 'The GPU device was lost: press Load to load the model again.';
  text.dataset.state = 'lost';
  await unload().catch(() => undefined);
}

const urlInput = $<HTMLInputElement>('model-url');
urlInput.value = new URL(params.get('model') ?? DEFAULT_MODEL, location.href).href;
$('load-form').addEventListener('submit', (e) => {
  e.preventDefault();
  void load(urlInput.value);
});
$<HTMLInputElement>('model-folder').addEventListener('change', (e) => {
  const files = (e.target as HTMLInputElement).files;
  if (files && files.length > 0) void load(files);
});
$('cancel').addEventListener('click', () => loading?.abort());
$('error-dismiss').addEventListener('click', clearError);

webgpu = await checkGpu();
if (webgpu && params.has('autoload')) void load(urlInput.value);
