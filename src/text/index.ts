// src/text: token ids from text and back, and the chat prompt format.

export {
  Tokenizer,
  loadTokenizer,
  loadTokenizerFromDir,
  type AddedTokenInfo,
  type DecodeOptions,
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
