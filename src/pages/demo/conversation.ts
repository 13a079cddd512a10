// One conversation held in one engine Session. With a chat template, each turn is a request to
// engine.chat.completions.create with the whole conversation and the kept session: the engine
// renders the template where it runs (the Worker), encodes message content as plain text (a
// control token typed by the visitor stays text: no forged turns, src/text/literal_content.ts),
// and prefills only what its cache does not hold yet (the conversation's common prefix with the
// session's tokens is reused). Without a template the model continues plain text: each turn
// appends a new line to what the session holds.

import type { ChatMessage, Engine, FinishReason, GenerateChunk, GenerateOptions, Session } from './lib.ts';

/** How a turn ended: the engine's finish reason, or 'failed' (an error before or during the answer). */
export type TurnEnd = FinishReason | 'failed';

/** What one reply takes from the page's settings. */
export type ReplyOptions = Pick<GenerateOptions, 'temperature' | 'topP' | 'maxTokens' | 'speculative' | 'responseFormat' | 'signal'>;

export class Conversation {
  private messages: ChatMessage[] = [];
  private session: Session | undefined;
  /** Plain text only: the session no longer holds what `messages` says (a failed turn), start a fresh one. */
  private stale = false;

  constructor(
    private readonly engine: Engine,
    /** 'chat': the checkpoint has a chat template; 'text': it continues plain text. */
    readonly mode: 'chat' | 'text',
  ) {}

  /** The model's answer to `user`, streamed; call end() with what was shown when it is over. */
  async *reply(user: string, options: ReplyOptions): AsyncGenerator<GenerateChunk> {
    if (this.mode === 'chat') yield* this.chatTurn(user, options);
    else yield* this.textTurn(user, options);
  }

  private async *chatTurn(user: string, options: ReplyOptions): AsyncGenerator<GenerateChunk> {
    this.session ??= await this.engine.createSession();
    const stream = await this.engine.chat.completions.create({
      messages: [...this.messages, { role: 'user', content: user }],
      session: this.session,
      stream: true,
      experts: true,
      max_tokens: options.maxTokens,
      temperature: options.temperature,
      top_p: options.topP,
      speculative: options.speculative,
      response_format: options.responseFormat,
      signal: options.signal,
    });
    for await (const chunk of stream) {
      const choice = chunk.choices[0];
      const stats = chunk.webmoe?.stats;
      yield {
        text: choice.delta.content ?? '',
        ids: chunk.webmoe?.ids ?? [],
        ...(chunk.webmoe?.experts ? { experts: chunk.webmoe.experts } : {}),
        ...(choice.finish_reason && stats ? { done: { finishReason: choice.finish_reason, stats } } : {}),
      };
    }
  }

  private async *textTurn(user: string, options: ReplyOptions): AsyncGenerator<GenerateChunk> {
    let prompt = `\n${user}`;
    if (!this.session || this.stale) {
      await this.closeSession();
      this.session = await this.engine.createSession();
      this.stale = false;
      prompt = [...this.messages.map((m) => m.content), user].join('\n');
    }
    const first = this.messages.length === 0 || prompt !== `\n${user}`;
    yield* this.engine.generate(prompt, { ...options, session: this.session, addBos: first, experts: true });
  }

  /** Records the turn; `answer` is the text shown, `tokens` how many were generated. */
  end(user: string, answer: string, how: TurnEnd, tokens: number): void {
    if (how === 'failed') {
      // Left out of the conversation. A chat session is compared with the next request anyway;
      // a text session may hold part of this prompt, so the next turn starts a fresh one.
      this.stale = true;
      return;
    }
    this.messages.push({ role: 'user', content: user }, { role: 'assistant', content: answer });
    // Stopped during the prefill: the text session holds part of the user's turn.
    if (how === 'abort' && tokens === 0) this.stale = true;
  }

  /** Forgets the conversation and frees its cache. */
  async reset(): Promise<void> {
    this.messages = [];
    this.stale = false;
    await this.closeSession();
  }

  private async closeSession(): Promise<void> {
    const session = this.session;
    this.session = undefined;
    if (session) await this.engine.closeSession(session).catch(() => undefined);
  }
}
