// One conversation held in one engine Session: each turn sends only the text that is new since
// the cache's last token, so the engine prefills just that. The turn's text comes from the chat
// template: render the conversation with the new user message, and drop the part the session
// already holds (the same conversation rendered up to the last answer). Without a template the
// model simply continues the text.
//
// What the session holds after an answer: when it stopped on EOS, the EOS token (which closes an
// assistant turn in DeepSeek-V3's template); when it ran out of tokens or was stopped, not the
// closing, so the next turn starts with it.

import type { ChatMessage, ChatTemplate, Engine, FinishReason, Session } from './lib.ts';

export interface Turn {
  /** Text to append to what the session holds. */
  prompt: string;
  session: Session;
  /** Add the tokenizer's BOS (only a fresh session without a template that writes it). */
  addBos: boolean;
}

/** How a turn ended: the engine's finish reason, or 'failed' (an error before or during the answer). */
export type TurnEnd = FinishReason | 'failed';

const MARK = '\u0000answer\u0000';

export class Conversation {
  private messages: ChatMessage[] = [];
  private session: Session | undefined;
  /** The session's tokens end with the template's closing of the last answer. */
  private closed = true;
  /** The session no longer matches `messages`: the next turn starts a fresh one with everything. */
  private stale = false;
  /** What the template writes after an assistant message's content (DeepSeek-V3: the EOS token). */
  private readonly closing: string;

  constructor(
    private readonly engine: Engine,
    private readonly template: ChatTemplate | undefined,
  ) {
    const sample = template?.applyChatTemplate([{ role: 'user', content: 'u' }, { role: 'assistant', content: MARK }], { addGenerationPrompt: false }) ?? '';
    this.closing = sample.includes(MARK) ? sample.slice(sample.indexOf(MARK) + MARK.length) : '';
  }

  get usesTemplate(): boolean {
    return this.template !== undefined;
  }

  /** The text and session for the user's next message. */
  async begin(user: string): Promise<Turn> {
    const next: ChatMessage[] = [...this.messages, { role: 'user', content: user }];
    if (this.session && !this.stale) {
      const held = this.render(this.messages, false);
      const whole = this.render(next, true);
      // A template that rewrites earlier turns (some drop old reasoning) needs the whole conversation again.
      if (whole.startsWith(held)) return { prompt: (this.closed ? '' : this.closing) + whole.slice(held.length), session: this.session, addBos: false };
    }
    await this.closeSession();
    this.session = await this.engine.createSession();
    this.stale = false;
    return { prompt: this.render(next, true), session: this.session, addBos: !this.template };
  }

  /** Records the turn; `answer` is the text shown, `tokens` how many were generated. */
  end(user: string, answer: string, how: TurnEnd, tokens: number): void {
    if (how === 'failed') {
      // The session may hold part of the prompt: start over next time, without this message.
      this.stale = true;
      return;
    }
    this.messages.push({ role: 'user', content: user }, { role: 'assistant', content: answer });
    this.closed = how === 'stop';
    // Stopped during the prefill: the session holds part of the user's turn.
    if (how === 'abort' && tokens === 0) this.stale = true;
  }

  /** Forgets the conversation and frees its cache. */
  async reset(): Promise<void> {
    this.messages = [];
    this.closed = true;
    this.stale = false;
    await this.closeSession();
  }

  private render(messages: ChatMessage[], addGenerationPrompt: boolean): string {
    if (this.template) return messages.length === 0 ? '' : this.template.applyChatTemplate(messages, { addGenerationPrompt });
    return messages.map((m) => m.content).join('\n');
  }

  private async closeSession(): Promise<void> {
    const session = this.session;
    this.session = undefined;
    if (session) await this.engine.closeSession(session).catch(() => undefined);
  }
}
