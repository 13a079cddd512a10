// POST /v1/chat/completions: the body as the engine's ChatCompletionRequest. Messages are
// system / developer (OpenAI's newer name for system) / user / assistant turns whose content is a
// string or a list of text parts (joined with newlines, as vLLM does); images, audio, tools and
// function calls are refused with a 400 that says so.

import type { ChatMessage } from '../text/chat_template.ts';
import type { ChatCompletionRequest } from '../runtime/types.ts';
import type { JsonObject } from './body.ts';
import { badField } from './http_error.ts';
import { refuseUnless } from './fields.ts';
import { samplingFields, streamFields, type StreamFields } from './sampling_fields.ts';

export interface ChatRequest extends StreamFields {
  request: Omit<ChatCompletionRequest, 'signal' | 'session' | 'stream'>;
}

const ROLES: Record<string, ChatMessage['role']> = { system: 'system', developer: 'system', user: 'user', assistant: 'assistant' };

export function parseChatRequest(body: JsonObject): ChatRequest {
  refuseUnless(body, 'logprobs', (v) => v === false, 'logprobs is not supported');
  refuseUnless(body, 'top_logprobs', () => false, 'top_logprobs is not supported');
  for (const name of ['tools', 'functions']) refuseUnless(body, name, (v) => Array.isArray(v) && v.length === 0, `${name} are not supported: this server does not call tools`);
  refuseUnless(body, 'tool_choice', (v) => v === 'none', 'tool_choice is not supported: this server does not call tools');
  // The engine's chat API stops on the checkpoint's EOS and stop strings; ids are /v1/completions' extension.
  refuseUnless(body, 'stop_token_ids', (v) => Array.isArray(v) && v.length === 0, 'stop_token_ids is supported by /v1/completions only; use stop strings here');
  return { ...streamFields(body), request: { messages: messagesField(body.messages), ...openAINames(samplingFields(body)) } };
}

function messagesField(value: unknown): ChatMessage[] {
  if (!Array.isArray(value) || value.length === 0) throw badField('messages', 'messages must be a non-empty array of {role, content}', value === undefined ? 'missing_field' : 'invalid_value');
  return value.map((m, i) => {
    const param = `messages[${i}]`;
    if (typeof m !== 'object' || m === null || Array.isArray(m)) throw badField(param, `${param} must be an object {role, content}`);
    const { role, content } = m as JsonObject;
    const mapped = typeof role === 'string' ? ROLES[role] : undefined;
    if (!mapped) throw badField(`${param}.role`, `${param}.role must be one of ${Object.keys(ROLES).join(', ')}, got ${JSON.stringify(role)}`);
    return { role: mapped, content: contentOf(content, `${param}.content`) };
  });
}

/** A message's content: a string, or text parts [{type: 'text', text}]. */
function contentOf(content: unknown, param: string): string {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    return content
      .map((part, j) => {
        const p = part as JsonObject | null;
        if (typeof p !== 'object' || p === null || p.type !== 'text' || typeof p.text !== 'string') {
          throw badField(`${param}[${j}]`, `${param}[${j}] must be a text part {type: "text", text}; this model reads text only`);
        }
        return p.text;
      })
      .join('\n');
  }
  throw badField(param, `${param} must be a string or an array of text parts`);
}

/** The engine's option names back to the chat API's (ChatCompletionRequest keeps OpenAI's). */
function openAINames(o: ReturnType<typeof samplingFields>): Omit<ChatRequest['request'], 'messages'> {
  return {
    max_tokens: o.maxTokens,
    temperature: o.temperature,
    top_p: o.topP,
    top_k: o.topK,
    seed: o.seed,
    stop: o.stop,
    repetition_penalty: o.repetitionPenalty,
    ignore_eos: o.ignoreEos,
    speculative: o.speculative,
    response_format: o.responseFormat,
  };
}
