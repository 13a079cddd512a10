// Live figures for the answer being written: time to first token, prefill and decode speed, MTP
// acceptance and the token count. While streaming they are measured here; when the answer ends
// the engine's own GenerationStats replace them (an answer that was stopped has none).

import type { FinishReason, GenerationStats } from './lib.ts';
import { $ } from './dom.ts';

const FIELDS = ['ttft', 'prefill', 'decode', 'mtp', 'tokens'] as const;
type Field = (typeof FIELDS)[number];

export class Figures {
  private started = 0;
  private firstToken: number | undefined;
  private tokens = 0;

  /** A new answer: clear the figures. */
  start(speculative: boolean): void {
    this.started = performance.now();
    this.firstToken = undefined;
    this.tokens = 0;
    $('figures-box').hidden = false;
    $('figures').dataset.state = 'live';
    for (const f of FIELDS) set(f, '…');
    set('mtp', speculative ? '…' : 'off');
  }

  /** `count` more tokens arrived. */
  tokensArrived(count: number): void {
    if (count === 0) return;
    const now = performance.now();
    if (this.firstToken === undefined) {
      this.firstToken = now;
      set('ttft', ms(now - this.started));
    }
    this.tokens += count;
    const decoded = this.tokens - 1;
    if (decoded > 0) set('decode', `${rate(decoded / ((now - this.firstToken) / 1000))} tok/s`);
    set('tokens', `${this.tokens}`);
  }

  /** The engine's figures for the finished answer. */
  finished(stats: GenerationStats, reason: FinishReason): void {
    const reused = stats.promptTokens - stats.prefilledTokens;
    set('ttft', ms(stats.ttftMs));
    set('prefill', `${rate(stats.prefillTokensPerS)} tok/s · ${stats.prefilledTokens} new token${stats.prefilledTokens === 1 ? '' : 's'}${reused > 0 ? `, ${reused} reused from the cache` : ''}`);
    set('decode', stats.generatedTokens > 1 ? `${rate(stats.decodeTokensPerS)} tok/s` : '–');
    set('mtp', stats.mtp ? acceptance(stats.mtp) : 'off (plain decoding)');
    set('tokens', `${stats.generatedTokens} generated (${reason === 'stop' ? 'end of answer' : reason === 'length' ? 'max tokens reached' : 'stopped'})`);
    $('figures').dataset.state = 'done';
  }

  /** Stopped by the visitor: keep what was measured here. */
  stopped(): void {
    set('tokens', `${this.tokens} generated (stopped)`);
    if (this.firstToken === undefined) set('ttft', '–');
    for (const f of FIELDS) if ($(`fig-${f}`).textContent === '…') set(f, '–');
    $('figures').dataset.state = 'stopped';
  }
}

function acceptance({ drafted, accepted }: { drafted: number; accepted: number }): string {
  if (drafted === 0) return 'no drafts yet';
  return `${accepted} of ${drafted} drafts accepted (${Math.round((100 * accepted) / drafted)}%)`;
}

function set(field: Field, text: string): void {
  $(`fig-${field}`).textContent = text;
}

function ms(value: number): string {
  return value >= 1000 ? `${(value / 1000).toFixed(2)} s` : `${Math.round(value)} ms`;
}

function rate(perSecond: number): string {
  return perSecond >= 100 ? perSecond.toFixed(0) : perSecond.toFixed(1);
}
