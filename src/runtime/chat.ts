// chat.completions.create in the OpenAI shape over the engine's generation: the checkpoint's chat
// template turns the messages into ids (with a session, the conversation so far shares its prefix
// with the cache, so a new turn prefills only its new tokens).

import { ArgumentError } from '../errors.ts';
import type { Tokenizer } from '../text/tokenizer.ts';
import type { ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChatWebmoeFields, Engine, FinishReason, GenerateChunk, GenerateOptions } from './types.ts';

export interface ChatHost {
  generateIds(ids: number[], options: GenerateOptions): AsyncIterable<GenerateChunk>;
}

let completionCounter = 0;

/**
 * The one place the OpenAI names become the engine's: the request's options as GenerateOptions,
 * unchecked (the engine checks them once, as it does generate's).
 */
function generateOptionsOf(request: ChatCompletionRequest): GenerateOptions {
  return {
    maxTokens: request.max_tokens,
    temperature: request.temperature,
    topP: request.top_p,
    seed: request.seed,
    stop: request.stop,
    session: request.session,
    signal: request.signal,
    topK: request.top_k,
    repetitionPenalty: request.repetition_penalty,
    ignoreEos: request.ignore_eos,
    speculative: request.speculative,
    experts: request.experts,
    responseFormat: request.response_format,
  };
}

/**
 * `maxContext`: the engine's context; messages longer than it could hold are refused before the
 * template runs and the text is tokenized (PromptTooLongError).
 */
export function createChat(host: ChatHost, tokenizer: () => Tokenizer, modelName: string, maxContext?: number): Engine['chat'] {
  function start(request: ChatCompletionRequest) {
    if (!Array.isArray(request.messages) || request.messages.length === 0) throw new ArgumentError('messages must be a non-empty array of {role, content}');
    // Message content is plain text: a control token typed into it stays text (no forged turns).
    const ids = tokenizer().encodeChat(request.messages, { addGenerationPrompt: true, maxTokens: maxContext });
    const chunks = host.generateIds(ids, generateOptionsOf(request));
    return { chunks, id: `chatcmpl-${Date.now().toString(36)}-${++completionCounter}`, created: Math.floor(Date.now() / 1000) };
  }

  async function* stream(request: ChatCompletionRequest): AsyncGenerator<ChatCompletionChunk> {
    const { chunks, id, created } = start(request);
    const base = { id, object: 'chat.completion.chunk' as const, created, model: modelName };
    yield { ...base, choices: [{ index: 0, delta: { role: 'assistant' }, finish_reason: null }] };
    for await (const chunk of chunks) {
      const webmoe: ChatWebmoeFields = { ids: chunk.ids, ...(chunk.experts ? { experts: chunk.experts } : {}) };
      if (chunk.done) {
        const { stats, finishReason } = chunk.done;
        yield {
          ...base,
          choices: [{ index: 0, delta: chunk.text ? { content: chunk.text } : {}, finish_reason: finishReason }],
          usage: { prompt_tokens: stats.promptTokens, completion_tokens: stats.generatedTokens, total_tokens: stats.promptTokens + stats.generatedTokens },
          webmoe: { ...webmoe, stats },
        };
      } else if (chunk.text || chunk.ids.length > 0) {
        yield { ...base, choices: [{ index: 0, delta: chunk.text ? { content: chunk.text } : {}, finish_reason: null }], webmoe };
      }
    }
  }

  async function complete(request: ChatCompletionRequest): Promise<ChatCompletion> {
    const { chunks, id, created } = start(request);
    let content = '';
    let finish: FinishReason = 'length';
    let usage = { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 };
    const webmoe: ChatWebmoeFields = { ids: [] };
    for await (const chunk of chunks) {
      content += chunk.text;
      webmoe.ids.push(...chunk.ids);
      if (chunk.experts) (webmoe.experts ??= []).push(...chunk.experts);
      if (chunk.done) {
        finish = chunk.done.finishReason;
        const s = (webmoe.stats = chunk.done.stats);
        usage = { prompt_tokens: s.promptTokens, completion_tokens: s.generatedTokens, total_tokens: s.promptTokens + s.generatedTokens };
      }
    }
    return { id, object: 'chat.completion', created, model: modelName, choices: [{ index: 0, message: { role: 'assistant', content }, finish_reason: finish }], usage, webmoe };
  }

  const create = (async (request: ChatCompletionRequest) => (request.stream ? stream(request) : complete(request))) as Engine['chat']['completions']['create'];
  return { completions: { create } };
}
