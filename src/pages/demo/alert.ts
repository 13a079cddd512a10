// The page's one alert box: every failure ends here as a title, the error's own message and what
// to do next. WebmoeErrors are told apart by their stable `code` (the same whether the error was
// thrown in this thread or rebuilt from the engine's Worker).

import { WebmoeError, type WebmoeErrorCode } from './lib.ts';
import { $ } from './dom.ts';

export interface Explanation {
  title: string;
  message: string;
  advice: string;
}

const ADVICE: Partial<Record<WebmoeErrorCode, [title: string, advice: string]>> = {
  NO_WEBGPU: ['WebGPU is not available', 'Use a recent Chrome, Edge or another browser with WebGPU turned on, on a computer with a supported GPU.'],
  DEVICE_LOST: [
    'The GPU stopped working for this page',
    'This happens when the graphics driver resets, the tab stayed in the background for long, or memory ran out. Load the model again to continue.',
  ],
  OUT_OF_MEMORY: ['Out of GPU memory', 'Close other tabs or apps that use the GPU, lower “Max tokens”, start a new chat, or load a smaller checkpoint.'],
  GPU_LIMIT: ['This GPU cannot run this model', 'The adapter lacks a limit or feature the engine needs; try another browser or GPU, or a smaller checkpoint.'],
  NON_FINITE: ['The model produced NaN or infinite numbers', 'The checkpoint’s weights or scales hold non-finite values, or a config value is extreme: this checkpoint cannot run; try another one.'],
  BUSY: ['The engine is busy', 'Too many requests are waiting for memory; try again when some finish.'],
  BAD_CONFIG: ['The checkpoint’s config.json is wrong', 'Check that the folder holds a DeepSeek-V3-family checkpoint in the Hugging Face layout.'],
  UNSUPPORTED_CONFIG: ['This checkpoint asks for something webmoe does not run', 'webmoe runs DeepSeek-V3-architecture models; see the key named above.'],
  BAD_CHECKPOINT: ['The checkpoint’s files are wrong', 'The weights do not match config.json; download the checkpoint again or pick another one.'],
  MISSING_FILE: ['A file is missing', 'The folder needs config.json, the *.safetensors files (with their index when sharded) and, to chat, tokenizer.json and tokenizer_config.json.'],
  FETCH_FAILED: ['The download failed', 'Check the URL and your connection; the server must allow this page to read the files (CORS) and serve byte ranges.'],
  BAD_TOKENIZER: ['The tokenizer cannot be used', 'Chatting needs tokenizer.json and tokenizer_config.json with a chat template.'],
  PROMPT_TOO_LONG: ['The conversation is too long', 'Start a new chat or lower “Max tokens”.'],
  BAD_ARGUMENT: ['A setting is not valid', 'Check the values under Settings.'],
  BAD_GRAMMAR: ['The JSON Schema cannot be used', 'Change the schema under JSON mode (the message says what the grammar library refused), or empty the box to ask for any JSON object.'],
};

export function explainError(err: unknown): Explanation {
  if (err instanceof WebmoeError) {
    const [title, advice] = ADVICE[err.code] ?? ['Something failed', ''];
    return { title, message: err.message, advice };
  }
  const message = err instanceof Error ? err.message : String(err);
  return { title: 'Something went wrong', message, advice: 'Reloading the page may help; the browser console has the details.' };
}

/** Shows the alert box for `err` and moves nothing else: the reader's focus stays where it was. */
export function showError(err: unknown): void {
  if (!(err instanceof WebmoeError)) console.error(err);
  const { title, message, advice } = explainError(err);
  const box = $('error');
  box.dataset.code = err instanceof WebmoeError ? err.code : 'UNKNOWN';
  $('error-title').textContent = title;
  $('error-message').textContent = message;
  $('error-advice').textContent = advice;
  $('error-advice').hidden = advice === '';
  box.hidden = false;
}

export function clearError(): void {
  $('error').hidden = true;
}

export function isDeviceLost(err: unknown): boolean {
  return err instanceof WebmoeError && err.code === 'DEVICE_LOST';
}

export function isAbort(err: unknown): boolean {
  return err instanceof WebmoeError && err.code === 'ABORTED';
}

