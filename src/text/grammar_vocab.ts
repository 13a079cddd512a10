// What a grammar library needs to know of a tokenizer to map token ids to the bytes they stand
// for: how tokenizer.json encodes bytes in its token strings. xgrammar's TokenizerInfo takes the
// raw token strings with this "vocab type" and decodes them itself, as its Python
// TokenizerInfo.from_huggingface does from the same fields.

/**
 * 'byte_level': GPT-2's byte-to-unicode table (a ByteLevel decoder: DeepSeek-V3, the shipped
 * checkpoint); 'byte_fallback': SentencePiece pieces with <0xNN> byte tokens and ▁ for a space;
 * 'raw': the strings are the text.
 */
export type VocabType = 'byte_level' | 'byte_fallback' | 'raw';

export interface VocabEncoding {
  vocabType: VocabType;
  /** The tokenizer puts a space before the text (a Metaspace prefix): the grammar must skip it. */
  prependSpace: boolean;
}

type Json = Record<string, unknown>;

/** The decoders of tokenizer.json, a Sequence flattened. */
function decoders(json: Json): Json[] {
  const decoder = json.decoder as Json | null | undefined;
  if (!decoder || typeof decoder !== 'object') return [];
  return decoder.type === 'Sequence' && Array.isArray(decoder.decoders) ? (decoder.decoders as Json[]) : [decoder];
}

/** The vocab encoding of a parsed tokenizer.json, read from its decoder (and its model's byte_fallback). */
export function vocabEncodingOf(json: Json): VocabEncoding {
  const types = decoders(json).map((d) => d.type);
  const model = (json.model ?? {}) as Json;
  const metaspace = decoders(json).find((d) => d.type === 'Metaspace');
  const prependSpace = metaspace !== undefined && (metaspace.add_prefix_space === true || metaspace.prepend_scheme === 'always' || metaspace.prepend_scheme === 'first');
  if (types.includes('ByteLevel')) return { vocabType: 'byte_level', prependSpace: false };
  if (types.includes('ByteFallback') || model.byte_fallback === true) return { vocabType: 'byte_fallback', prependSpace };
  return { vocabType: 'raw', prependSpace };
}
