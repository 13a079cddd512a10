// A cap on prompt text before it is tokenized. Encoding costs time in proportion to the text
// (2.2 MB took 1.3 s), all of it wasted when the ids then exceed the context, so text that
// cannot fit is refused first. Natural text averages 3-6 characters per token; 32 leaves room
// for long runs of spaces or symbols that merge into long tokens.

import { PromptTooLongError } from '../errors.ts';

export const MAX_CHARS_PER_TOKEN = 32;

/** Refuses `chars` characters of prompt text that cannot fit in `maxTokens` tokens. */
export function checkPromptChars(chars: number, maxTokens: number | undefined, what = 'the prompt'): void {
  if (maxTokens === undefined) return;
  const limit = maxTokens * MAX_CHARS_PER_TOKEN;
  if (chars > limit) {
    throw new PromptTooLongError(
      `${what} is ${chars} characters, more than ${maxTokens} tokens of context can hold (at most ${MAX_CHARS_PER_TOKEN} characters a token, ${limit} in all)`,
    );
  }
}
