// The model-level peer, measured: webmoe and onnxruntime-web (the ONNX export of the same
// checkpoint, tools/peer/) on this page's browser, the same prompts, greedy, the same token budget.
// Prefill and decode tokens per second are defined alike for both (runtime/generate.ts):
// prefill = prompt tokens / time to the first token; decode = the other tokens / their time.

import type { Engine } from '../../runtime/types.ts';
import { compareGreedy, top2, type GreedyComparison } from './peer_compare.ts';
import type { OrtPeer } from './peer_ort.ts';
import { parsePlacement, type Placement } from './peer_placement.ts';

export interface PeerPromptResult {
  prompt: string;
  promptTokens: number;
  webmoe: number[];
  ort: number[];
  comparison: GreedyComparison;
  /** webmoe's own top-1 minus top-2 margin at the first disagreement (engine.logits on the common prefix). */
  webmoeMarginThere?: number;
}

export interface EngineRate {
  prefillTokensPerS: number;
  decodeTokensPerS: number;
  prefillMs: number;
  decodeMs: number;
  promptTokens: number;
  decodedTokens: number;
}

export interface PeerReport {
  checkpoint: string;
  adapter: string;
  maxTokens: number;
  webmoe: EngineRate;
  /** build: which onnxruntime-web WebGPU implementation ran (PEER_BUILDS); placement: its nodes per provider. */
  ort: EngineRate & { build: string; executionProvider: string; placement: Placement };
  prompts: PeerPromptResult[];
  /** Every prompt's tokens agree up to a disagreement where the ORT logits had no clear margin. */
  agreeWhereClear: boolean;
}

interface Totals {
  prefillMs: number;
  decodeMs: number;
  promptTokens: number;
  decodedTokens: number;
}

const rate = (t: Totals): EngineRate => ({ ...t, prefillTokensPerS: (1000 * t.promptTokens) / t.prefillMs, decodeTokensPerS: (1000 * t.decodedTokens) / t.decodeMs });

async function webmoeGreedy(engine: Engine, ids: number[], maxTokens: number): Promise<{ tokens: number[]; prefillMs: number; decodeMs: number }> {
  const tokens: number[] = [];
  for await (const chunk of engine.generate(ids, { temperature: 0, maxTokens, ignoreEos: true, speculative: false })) {
    tokens.push(...chunk.ids);
    if (chunk.done) {
      const s = chunk.done.stats;
      return { tokens, prefillMs: s.ttftMs, decodeMs: s.decodeTokensPerS > 0 ? (1000 * (s.generatedTokens - 1)) / s.decodeTokensPerS : 0 };
    }
  }
  throw new Error('generate ended without its final chunk');
}

/**
 * Both engines on each prompt, in turn (which one goes first alternates, so that a drift of a CPU
 * adapter's speed falls on both alike), after one untimed warm-up run of each.
 */
export async function runPeerComparison(engine: Engine, peer: OrtPeer, options: { prompts: string[]; maxTokens: number; checkpoint: string; adapter: string; build: string; onProgress: (line: string) => void }): Promise<PeerReport> {
  const { maxTokens } = options;
  const prompts = await Promise.all(options.prompts.map((p) => engine.tokenize(p)));
  options.onProgress('warming up both engines');
  await webmoeGreedy(engine, prompts[0], 2); // a prefill and a decode step: every pipeline either uses
  await peer.greedy(prompts[0], 2);
  const ours: Totals = { prefillMs: 0, decodeMs: 0, promptTokens: 0, decodedTokens: 0 };
  const theirs: Totals = { ...ours };
  const results: PeerPromptResult[] = [];
  for (const [i, ids] of prompts.entries()) {
    options.onProgress(`prompt ${i + 1} of ${prompts.length}: ${maxTokens} greedy tokens on each engine`);
    let a: Awaited<ReturnType<typeof webmoeGreedy>>;
    let b: Awaited<ReturnType<OrtPeer['greedy']>>;
    if (i % 2 === 0) {
      a = await webmoeGreedy(engine, ids, maxTokens);
      b = await peer.greedy(ids, maxTokens);
    } else {
      b = await peer.greedy(ids, maxTokens);
      a = await webmoeGreedy(engine, ids, maxTokens);
    }
    for (const [t, r] of [[ours, a], [theirs, b]] as const) {
      t.prefillMs += r.prefillMs;
      t.decodeMs += r.decodeMs;
      t.promptTokens += ids.length;
      t.decodedTokens += r.tokens.length - 1;
    }
    const comparison = compareGreedy(a.tokens, b.tokens, b.margins);
    const result: PeerPromptResult = { prompt: options.prompts[i], promptTokens: ids.length, webmoe: a.tokens, ort: b.tokens, comparison };
    const at = comparison.firstDisagreement?.index;
    if (at !== undefined) {
      const [row] = await engine.logits([...ids, ...a.tokens.slice(0, at)]);
      result.webmoeMarginThere = top2(row).margin;
    }
    results.push(result);
  }
  return {
    checkpoint: options.checkpoint,
    adapter: options.adapter,
    maxTokens,
    webmoe: rate(ours),
    ort: { ...rate(theirs), build: options.build, executionProvider: peer.executionProvider, placement: parsePlacement(peer.placementLog) },
    prompts: results,
    agreeWhereClear: results.every((r) => r.comparison.agreeWhereClear),
  };
}
