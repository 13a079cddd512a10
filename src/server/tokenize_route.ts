// POST /tokenize and /detokenize, as vLLM serves them: the checkpoint's tokenizer over HTTP, for a
// remote engine's tokenize() / detokenize().

import type { WireDetokenizeResponse, WireTokenizeResponse } from '../remote/wire.ts';
import { badField } from './http_error.ts';
import { optionalBoolean, optionalIntArray } from './fields.ts';
import { checkModel, sendJson, type Route } from './route.ts';

export const tokenize: Route = async ({ res, body, engine, modelId }) => {
  checkModel(body, modelId);
  if (typeof body.prompt !== 'string') throw badField('prompt', 'prompt must be a string', body.prompt === undefined ? 'missing_field' : 'invalid_value');
  const tokens = await engine.tokenize(body.prompt, { addBos: optionalBoolean(body, 'add_special_tokens') ?? true });
  const { limits } = await engine.stats();
  const reply: WireTokenizeResponse = { tokens, count: tokens.length, max_model_len: limits.maxContext };
  sendJson(res, 200, reply);
};

export const detokenize: Route = async ({ res, body, engine, modelId }) => {
  checkModel(body, modelId);
  const tokens = optionalIntArray(body, 'tokens', 0, engine.info.config.vocab_size - 1);
  if (tokens === undefined) throw badField('tokens', 'tokens is required: an array of token ids', 'missing_field');
  const reply: WireDetokenizeResponse = { prompt: await engine.detokenize(tokens) };
  sendJson(res, 200, reply);
};
