// The fields chat completions and completions share: streaming, the token budget, sampling, stop
// conditions, structured output (response_format), and OpenAI's fields the engine does not have,
// each refused with a 400 that says so rather than silently ignored. The ranges are the engine's
// (runtime/generate.ts checks them
// again); vLLM's extensions (top_k, repetition_penalty, stop_token_ids, ignore_eos) are accepted.

import { GrammarError, WebmoeError } from '../errors.ts';
import { checkResponseFormat } from '../runtime/grammar.ts';
import type { GenerateOptions, ResponseFormat } from '../runtime/types.ts';
import type { JsonObject } from './body.ts';
import { badField } from './http_error.ts';
import { optionalBoolean, optionalIntArray, optionalNumber, optionalObject, refuseUnless } from './fields.ts';

/** At most this many stop strings (OpenAI allows 4; vLLM more). */
export const MAX_STOP_STRINGS = 16;

export interface StreamFields {
  stream: boolean;
  /** stream_options.include_usage: end the stream with a chunk that carries only `usage`. */
  includeUsage: boolean;
}

export function streamFields(body: JsonObject): StreamFields {
  const stream = optionalBoolean(body, 'stream') ?? false;
  const options = optionalObject(body, 'stream_options');
  if (options !== undefined && !stream) throw badField('stream_options', 'stream_options is only allowed with stream: true');
  const includeUsage = options === undefined ? undefined : optionalBoolean(options, 'include_usage');
  return { stream, includeUsage: includeUsage ?? false };
}

/** The sampling and stop fields as the engine's options (absent ones left to the engine's defaults). */
export function samplingFields(body: JsonObject): GenerateOptions {
  refuseUnless(body, 'n', (v) => v === 1, 'n must be 1: this server makes one choice per request');
  for (const name of ['frequency_penalty', 'presence_penalty']) {
    refuseUnless(body, name, (v) => v === 0, `${name} is not supported (use repetition_penalty, as in vLLM)`);
  }
  refuseUnless(body, 'logit_bias', (v) => typeof v === 'object' && v !== null && Object.keys(v).length === 0, 'logit_bias is not supported');
  // max_completion_tokens is the newer name; it wins when both are given, as in vLLM.
  const budget = { integer: true, min: 1, expected: 'an integer >= 1' };
  const maxTokens = optionalNumber(body, 'max_completion_tokens', budget) ?? optionalNumber(body, 'max_tokens', budget);
  // vLLM's top_k -1 means off, as the engine's 0.
  const topK = optionalNumber(body, 'top_k', { integer: true, min: -1, max: 2 ** 32 - 1, expected: 'an integer >= 0 (0 or -1: off)' });
  return {
    maxTokens,
    temperature: optionalNumber(body, 'temperature', { min: 0, expected: 'a number >= 0 (0: greedy)' }),
    topP: optionalNumber(body, 'top_p', { above: 0, max: 1, expected: 'a number in (0, 1]' }),
    topK: topK === -1 ? 0 : topK,
    seed: optionalNumber(body, 'seed', { integer: true, min: 0, max: 2 ** 32 - 1, expected: 'an integer in [0, 2^32)' }),
    repetitionPenalty: optionalNumber(body, 'repetition_penalty', { above: 0, expected: 'a number > 0 (1: off)' }),
    stop: stopField(body),
    stopTokenIds: optionalIntArray(body, 'stop_token_ids', 0, 2 ** 32 - 1),
    ignoreEos: optionalBoolean(body, 'ignore_eos'),
    speculative: speculativeField(body),
    responseFormat: responseFormatField(body),
  };
}

/**
 * response_format, as OpenAI's: { type: 'text' | 'json_object' } or { type: 'json_schema',
 * json_schema: { name, schema, strict } }. Its shape is checked here (a 400 naming the field);
 * whether the schema compiles is the engine's answer (GrammarError, also a 400).
 */
function responseFormatField(body: JsonObject): ResponseFormat | undefined {
  const value = body.response_format;
  if (value === undefined || value === null) return undefined;
  try {
    checkResponseFormat(value as ResponseFormat);
  } catch (err) {
    if (err instanceof WebmoeError) throw badField('response_format', err.message, err instanceof GrammarError ? 'invalid_json_schema' : 'invalid_value');
    throw err;
  }
  return value as ResponseFormat;
}

/** webmoe's extension: MTP speculative decoding true, false or 'auto' (the engine's choice). */
function speculativeField(body: JsonObject): boolean | 'auto' | undefined {
  if (body.speculative === 'auto') return 'auto';
  return optionalBoolean(body, 'speculative');
}

function stopField(body: JsonObject): string | string[] | undefined {
  const value = body.stop;
  if (value === undefined || value === null) return undefined;
  const list = typeof value === 'string' ? [value] : value;
  const ok = Array.isArray(list) && list.length <= MAX_STOP_STRINGS && list.every((s) => typeof s === 'string' && s.length > 0);
  if (!ok) throw badField('stop', `stop must be a non-empty string or an array of at most ${MAX_STOP_STRINGS} non-empty strings`);
  return value as string | string[];
}
