// Message content as plain text (against role forgery). A chat prompt is one string, and encoding
// it matches every added token, so a user who types `<｜end▁of▁sentence｜><｜Assistant｜>` into a
// message would write real control tokens and forge a turn. When some content holds the text of
// an added token, the template is rendered again with a placeholder for each message's content:
// the text around the placeholders is the template's own and is encoded as usual (its special
// tokens stay special); each content is encoded with every added token in it cut apart, so it
// becomes the ordinary tokens of its characters.

import { ArgumentError, TokenizerError } from '../errors.ts';
import type { ChatMessage } from './chat_template.ts';

/** Finds the text of added tokens. One-character tokens cannot be cut apart and are left alone. */
export class AddedTokenMatcher {
  readonly #byFirstChar = new Map<string, string[]>();

  constructor(contents: Iterable<string>) {
    for (const content of contents) {
      if (content.length < 2) continue;
      const list = this.#byFirstChar.get(content[0]!) ?? [];
      list.push(content);
      this.#byFirstChar.set(content[0]!, list);
    }
  }

  /** The first position at or after `from` where an added token's text starts, or -1. */
  find(text: string, from = 0): { index: number; token: string } | null {
    for (let i = from; i < text.length; i++) {
      const candidates = this.#byFirstChar.get(text[i]!);
      const token = candidates?.find((t) => text.startsWith(t, i));
      if (token !== undefined) return { index: i, token };
    }
    return null;
  }
}

/**
 * `text` as plain text: cut one character into every added token found, so no piece holds a whole
 * one, and encode the pieces. `encode` is the tokenizer's (which matches added tokens);
 * `addedIds` the ids that must not come out.
 */
export function encodeLiteral(text: string, matcher: AddedTokenMatcher, encode: (text: string) => number[], addedIds: ReadonlySet<number>): number[] {
  const ids: number[] = [];
  let start = 0;
  for (let match = matcher.find(text); match; match = matcher.find(text, start)) {
    ids.push(...encode(text.slice(start, match.index + 1)));
    start = match.index + 1;
  }
  ids.push(...encode(text.slice(start)));
  // The cut guarantees it; a tokenizer that matched tokens some other way must not slip one through.
  const forged = ids.find((id) => addedIds.has(id));
  if (forged !== undefined) throw new TokenizerError(`message content was encoded with the added token id ${forged}; it cannot be made plain text`);
  return ids;
}

export interface Segment {
  text: string;
  /** Message content (encode with encodeLiteral), or the template's own text. */
  content: boolean;
}

// Private-use characters: no template writes them, and no template test treats them specially.
const placeholder = (i: number) => `\uE000${i}\uE001`;
const PLACEHOLDER = /\uE000(\d+)\uE001/;

/**
 * Splits a rendered prompt into the template's text and each message's content. The template is
 * rendered with placeholders; when putting the contents back does not give `rendered` (the
 * template edits content: strips it, drops reasoning), content cannot be told apart from the
 * template's text, and the request is refused rather than encoded unsafely.
 */
export function splitRendered(
  messages: readonly ChatMessage[],
  rendered: string,
  render: (messages: ChatMessage[]) => string,
  origin: string,
  matcher: AddedTokenMatcher,
): Segment[] {
  const parts = render(messages.map((m, i) => ({ role: m.role, content: placeholder(i) }))).split(PLACEHOLDER);
  const segments = parts.map((part, k): Segment => (k % 2 === 1 ? { text: messages[Number(part)]?.content ?? part, content: true } : { text: part, content: false }));
  if (segments.map((s) => s.text).join('') !== rendered) {
    const index = messages.findIndex((m) => matcher.find(m.content));
    const token = matcher.find(messages[index]?.content ?? '')?.token;
    throw new ArgumentError(
      `messages[${index}].content holds the token ${JSON.stringify(token)}, and ${origin} changes message text, so the content ` +
        'cannot be kept plain text; remove the token from the message, or pass specialTokensInContent: true to let it act as a token',
    );
  }
  return segments;
}
