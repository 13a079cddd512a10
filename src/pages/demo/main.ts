// The page `npm start` serves: checks WebGPU, then loads a checkpoint by itself (the one this
// browser loaded last, else the shipped one; ?model= names another) into an engine in a Worker,
// and chats with it, showing the model at work. Another URL or a folder on this computer can be
// loaded at any time. It uses the library exactly as an npm user would (lib.ts).

import { NoWebGPUError, type AdapterReport, type Engine } from './lib.ts';
import { $ } from './dom.ts';
import { clearError, isAbort, showError } from './alert.ts';
import { checkGpu } from './gpu_status.ts';
import { loadEngine, showSummary } from './load.ts';
import { showMemoryPlan } from './memory_plan.ts';
import { folderName, recall, remember } from './remembered.ts';
import { hasChatTemplate } from './template.ts';
import { ChatView } from './chat.ts';
import { readLoadSettings } from './settings.ts';

const DEFAULT_MODEL = 'models/webmoe-kjv-12m/';
const params = new URLSearchParams(location.search);

let adapter: AdapterReport | undefined;
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
  $('model-note').hidden = true;
  if (!adapter) {
    showError(new NoWebGPUError('No model can run in this browser: WebGPU is missing (see the GPU line above).'));
    return;
  }
  let settings;
  try {
    settings = readLoadSettings();
  } catch (err) {
    showError(err);
    return;
  }
  loading?.abort();
  const controller = (loading = new AbortController());
  const { signal } = controller;
  try {
    await unload();
    // Both read only small files (config.json, the headers, tokenizer_config.json) beside the load.
    void showMemoryPlan(model, adapter, signal);
    const chatMode = hasChatTemplate(model, signal).catch(() => false);
    const next = await loadEngine(model, typeof model !== 'string', signal, settings);
    if (loading !== controller) {
      await next.unload(); // another load started meanwhile
      return;
    }
    engine = next;
    remember(typeof model === 'string' ? { kind: 'url', url: model } : { kind: 'folder', name: folderName(model) });
    await showSummary(next);
    chat = new ChatView(next, (await chatMode) ? 'chat' : 'text', () => void dropLostEngine());
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
const last = recall();
const named = params.get('model');
urlInput.value = new URL(named ?? (last?.kind === 'url' ? last.url : DEFAULT_MODEL), location.href).href;
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

adapter = await checkGpu();
if (adapter && params.get('autoload') !== '0') {
  if (!named && last?.kind === 'folder') {
    // A page cannot reopen a folder by itself: say so, and leave the choice to the visitor.
    $('model-note').textContent = `Last time this browser loaded the folder “${last.name}” from this computer: pick it again below, or press Load for the URL.`;
    $('model-note').hidden = false;
  } else {
    void load(urlInput.value);
  }
}
