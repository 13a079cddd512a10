// The chat: a message list, the prompt box with Send / Stop / New chat, and the streaming loop
// that writes the model's tokens into the last message (each turn goes through the engine's
// chat.completions: conversation.ts). Each reply runs with its own AbortController (Stop,
// Escape); the figures, the experts heatmap, the cache chart and the expert cache follow it.

import { shortName, type Engine } from './lib.ts';
import { $, el } from './dom.ts';
import { clearError, isAbort, isDeviceLost, showError } from './alert.ts';
import { Conversation, type TurnEnd } from './conversation.ts';
import { Figures } from './figures.ts';
import { ExpertsHeatmap } from './experts_heatmap.ts';
import { drawCacheChart } from './cache_chart.ts';
import { ExpertCache } from './expert_cache.ts';
import { adaptSettings, readSettings } from './settings.ts';
import { setUpJsonMode, showParsed } from './json_mode.ts';

export class ChatView {
  private readonly conversation: Conversation;
  private readonly figures = new Figures();
  private readonly heatmap: ExpertsHeatmap;
  private readonly expertCache: ExpertCache;
  /** Removes this view's event listeners (a new engine gets a new view). */
  private readonly listeners = new AbortController();
  private running: AbortController | undefined;
  private readonly prompt = $<HTMLTextAreaElement>('prompt');

  constructor(
    private readonly engine: Engine,
    /** 'chat': the checkpoint has a chat template (the engine renders it); 'text': plain continuation. */
    mode: 'chat' | 'text',
    /** Called when the engine's GPU device is gone: the page drops the engine. */
    private readonly onDeviceLost: () => void,
  ) {
    this.conversation = new Conversation(engine, mode);
    this.heatmap = new ExpertsHeatmap(engine, engine.info);
    this.expertCache = new ExpertCache(engine.info);
    adaptSettings(engine.info);
    $('messages').replaceChildren();
    const name = shortName(engine.info.name);
    $('chat-hint').textContent = mode === 'chat'
      ? `Chatting with ${name} in its chat format. A small model writes fluent-looking text, not reliable answers.`
      : `${name} has no chat template: the model continues your text.`;
    // A checkpoint without tokenizer.json runs on token ids only: say so before the first message.
    engine.tokenize('x', { addBos: false }).catch(() => {
      if (!this.disposed) $('chat-hint').textContent = `${name} has no tokenizer.json, so it cannot chat in text; load a checkpoint with tokenizer files.`;
    });
    $('chat-status').textContent = '';
    $('chat-box').hidden = false;
    this.setRunning(false);
    void this.refreshCache();

    const on = { signal: this.listeners.signal };
    $('chat-form').addEventListener('submit', (e) => (e.preventDefault(), void this.send()), on);
    $('stop').addEventListener('click', () => this.stop(), on);
    $('new-chat').addEventListener('click', () => void this.newChat(), on);
    this.prompt.addEventListener('keydown', (e) => this.onKey(e), on);
    setUpJsonMode(this.listeners.signal);
  }

  private get disposed(): boolean {
    return this.listeners.signal.aborted;
  }

  stop(): void {
    this.running?.abort();
  }

  /** Stops a running reply and detaches from the page (before the engine is unloaded). */
  dispose(): void {
    this.stop();
    this.listeners.abort();
    this.heatmap.dispose();
    this.expertCache.dispose();
    for (const id of ['chat-box', 'figures-box', 'experts-box', 'cache-box']) $(id).hidden = true;
  }

  private onKey(e: KeyboardEvent): void {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      void this.send();
    } else if (e.key === 'Escape' && this.running) {
      e.preventDefault();
      this.stop();
    }
  }

  private async send(): Promise<void> {
    const text = this.prompt.value.trim();
    if (!text || this.running) return;
    clearError();
    let settings;
    try {
      settings = readSettings();
    } catch (err) {
      showError(err);
      return;
    }
    this.prompt.value = '';
    this.addMessage('user', text);
    const answer = this.addMessage('assistant', '');
    const controller = (this.running = new AbortController());
    this.setRunning(true);
    this.figures.start(settings.speculative !== false && this.engine.info.hasMtp);
    this.heatmap.clear();
    let written = '';
    let tokens = 0;
    let how: TurnEnd = 'failed';
    try {
      for await (const chunk of this.conversation.reply(text, { ...settings, signal: controller.signal })) {
        written += chunk.text;
        tokens += chunk.ids.length;
        this.write(answer, written);
        this.figures.tokensArrived(chunk.ids.length);
        if (chunk.experts) this.heatmap.add(chunk.experts);
        if (chunk.done) {
          how = chunk.done.finishReason;
          this.figures.finished(chunk.done.stats, how);
        }
      }
      answer.dataset.state = 'done';
      if (settings.responseFormat) showParsed(answer, written, how === 'failed' ? 'stop' : how);
      $('chat-status').textContent = `Answered with ${tokens} tokens.`;
    } catch (err) {
      if (this.disposed) {
        how = 'abort'; // the page unloads this engine: nothing to tell
      } else if (isAbort(err)) {
        how = 'abort';
        answer.dataset.state = 'stopped';
        this.figures.stopped();
        $('chat-status').textContent = `Stopped after ${tokens} tokens.`;
      } else {
        answer.dataset.state = 'failed';
        $('chat-status').textContent = 'The answer failed.';
        showError(err);
        if (isDeviceLost(err)) this.onDeviceLost();
      }
    } finally {
      this.conversation.end(text, written, how, tokens);
      this.running = undefined;
      // A view disposed meanwhile (another checkpoint is loading) leaves the page to the next one.
      if (!this.disposed) {
        this.setRunning(false);
        void this.refreshCache();
      }
    }
  }

  private async newChat(): Promise<void> {
    if (this.running) return;
    await this.conversation.reset();
    $('messages').replaceChildren();
    $('chat-status').textContent = 'New chat started.';
    this.heatmap.clear();
    await this.refreshCache();
    this.prompt.focus();
  }

  private setRunning(on: boolean): void {
    const stop = $<HTMLButtonElement>('stop');
    const hadFocus = document.activeElement === stop;
    $<HTMLButtonElement>('send').disabled = on;
    $<HTMLButtonElement>('new-chat').disabled = on;
    stop.disabled = !on;
    $('chat-box').dataset.state = on ? 'answering' : 'idle';
    if (on) $('chat-status').textContent = 'Answering…';
    // A disabled Stop button drops the keyboard focus; give it back to the prompt.
    if (!on && (hadFocus || document.activeElement === document.body)) this.prompt.focus();
  }

  private addMessage(role: 'user' | 'assistant', text: string): HTMLElement {
    const item = el('li', '', { class: `message message-${role}`, 'data-state': role === 'assistant' ? 'streaming' : 'done' });
    item.append(el('span', role === 'user' ? 'You' : 'Model', { class: 'who' }), el('p', text, { class: 'text' }));
    $('messages').append(item);
    this.scrollDown();
    return item;
  }

  private write(message: HTMLElement, text: string): void {
    const list = $('messages');
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    message.querySelector('.text')!.textContent = text;
    if (atBottom) this.scrollDown();
  }

  private scrollDown(): void {
    const list = $('messages');
    list.scrollTop = list.scrollHeight;
  }

  private async refreshCache(): Promise<void> {
    if (this.disposed) return;
    try {
      const stats = await this.engine.stats();
      if (this.disposed) return;
      drawCacheChart(this.engine.info, stats);
      this.expertCache.show(stats.offload);
    } catch (err) {
      if (isDeviceLost(err)) this.onDeviceLost();
    }
  }
}
