// src/text: token ids from text and back, and the chat prompt format.

export {
  Tokenizer,
  loadTokenizer,
  loadTokenizerFromDir,
  type AddedTokenInfo,
  type DecodeOptions,
  type EncodeChatOptions,
  type EncodeOptions,
  type LoadTokenizerOptions,
} from './tokenizer.ts';
export {
  ChatTemplate,
  loadChatTemplate,
  type ApplyChatTemplateOptions,
  type ChatMessage,
  type ChatRole,
  type LoadChatTemplateOptions,
} from './chat_template.ts';
export { createStreamDecoder, type StreamDecoder } from './stream_decoder.ts';
export { MAX_CHARS_PER_TOKEN } from './prompt_size.ts';
export type { RenderBudget } from './template_budget.ts';
