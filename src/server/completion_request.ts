// POST /v1/completions: the body as a prompt and the engine's generate options. The prompt is a
// string or an array of token ids; a batch of one (["text"] or [[1, 2]]) is accepted, more is
// refused (one choice per request). add_special_tokens (vLLM's) says whether BOS goes before a text.

import type { GenerateOptions } from '../runtime/types.ts';
import type { JsonObject } from './body.ts';
import { badField } from './http_error.ts';
import { optionalBoolean, refuseUnless } from './fields.ts';
import { samplingFields, streamFields, type StreamFields } from './sampling_fields.ts';

export interface CompletionRequest extends StreamFields {
  prompt: string | number[];
  options: GenerateOptions;
}

export function parseCompletionRequest(body: JsonObject): CompletionRequest {
  refuseUnless(body, 'echo', (v) => v === false, 'echo is not supported');
  refuseUnless(body, 'suffix', (v) => v === '', 'suffix is not supported');
  refuseUnless(body, 'best_of', (v) => v === 1, 'best_of must be 1');
  refuseUnless(body, 'logprobs', () => false, 'logprobs is not supported');
  const addBos = optionalBoolean(body, 'add_special_tokens');
  return { ...streamFields(body), prompt: promptField(body.prompt), options: { ...samplingFields(body), ...(addBos === undefined ? {} : { addBos }) } };
}

const isIds = (v: unknown): v is number[] => Array.isArray(v) && v.length > 0 && v.every((id) => Number.isSafeInteger(id) && id >= 0);

function promptField(value: unknown): string | number[] {
  if (value === undefined || value === null) throw badField('prompt', 'prompt is required: a string or an array of token ids', 'missing_field');
  if (typeof value === 'string') return value;
  if (isIds(value)) return value;
  if (Array.isArray(value) && value.length === 1 && (typeof value[0] === 'string' || isIds(value[0]))) return value[0];
  if (Array.isArray(value) && value.length > 1 && value.every((p) => typeof p === 'string' || isIds(p))) {
    throw badField('prompt', 'prompt holds several prompts: this server takes one per request');
  }
  throw badField('prompt', 'prompt must be a string or a non-empty array of token ids (integers >= 0)');
}
