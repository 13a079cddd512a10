// Incremental detokenization for streaming generation.
//
// Byte-level BPE splits one character across tokens (an emoji is 4 UTF-8 bytes, often 2-4 tokens;
// a Chinese character 3 bytes), so decoding each token alone shows U+FFFD for the pieces. Here
// each push decodes a short window of ids: the ids emitted last time (left context, so decoders
// that treat the first token specially see the same neighbours as a whole decode) plus the new
// ones. Text is emitted only when the window's text grew and does not end in U+FFFD, i.e. no
// character is waiting for more bytes. UTF-8 resynchronises after every complete character, so
// the pieces concatenate to exactly decode(all ids). The same scheme as the `DecodeStream` of
// Hugging Face tokenizers and text-generation-inference's `decode_token`.

export interface StreamDecoder {
  /** Add the next generated id; returns the text it completes ('' while a character is still partial). */
  push(id: number): string;
  /**
   * End of the stream: the text still held back. Bytes of a character that never completed come
   * out as U+FFFD, exactly as decode() of the whole sequence shows them. The decoder is then empty.
   */
  flush(): string;
}

const REPLACEMENT_CHARACTER = '\uFFFD';

/** A stream decoder over `decode`, which must turn a list of ids into text (Tokenizer.decode). */
export function createStreamDecoder(decode: (ids: readonly number[]) => string): StreamDecoder {
  // window = [ids already emitted last time (left context) | ids not yet emitted]
  let window: number[] = [];
  let contextLength = 0;

  const take = (force: boolean): string => {
    const context = decode(window.slice(0, contextLength));
    const text = decode(window);
    if (!force && text === context && decode(window.slice(contextLength)) === '') {
      // The new ids decode to nothing (skipped special tokens): drop them, or the window, and
      // each push's decode with it, would grow for as long as the model emits them (O(n^2)).
      window.length = contextLength;
      return '';
    }
    if (!force && (text.length <= context.length || text.endsWith(REPLACEMENT_CHARACTER))) return '';
    // The ids just emitted become the left context of the next window.
    window = window.slice(contextLength);
    contextLength = window.length;
    return text.slice(context.length);
  };

  return {
    push(id) {
      window.push(id);
      return take(false);
    },
    flush() {
      const rest = take(true);
      window = [];
      contextLength = 0;
      return rest;
    },
  };
}
