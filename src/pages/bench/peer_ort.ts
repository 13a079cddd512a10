// The model-level peer: the same checkpoint exported to ONNX (tools/peer/export_onnx.py) and run by
// onnxruntime-web. One graph serves prefill (the prompt in one run, an empty cache) and decode
// (one token a run): input_ids [1, T] and each layer's past key [1, H, P, dq] / value [1, H, P, dv]
// in, last-row logits [1, V] and the present k/v of P + T positions out. Greedy decoding reads the
// logits back (the margins are compared with webmoe's); on WebGPU the caches stay on the GPU from
// one run to the next (preferredOutputLocation 'gpu-buffer'), as transformers.js does.

import type * as Ort from 'onnxruntime-web';
import type { PeerManifest } from './peer_weights.ts';
import { top2 } from './peer_compare.ts';

export type OrtModule = typeof Ort;

/** Creating or running the ONNX peer failed; `cause` holds onnxruntime-web's own error. */
export class PeerError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'PeerError';
  }
}

export interface OrtPeerOptions {
  ort: OrtModule;
  /** decoder.onnx's bytes. */
  graph: Uint8Array;
  manifest: PeerManifest;
  /** The weights file the graph refers to (peerExternalData). */
  externalData: Uint8Array;
  executionProvider: 'webgpu' | 'wasm';
}

/** A greedy generation: the tokens, the top-1 minus top-2 logit margin of each, and the time of each phase. */
export interface PeerGreedyRun {
  tokens: number[];
  margins: number[];
  /** The prompt's run, logits read back and argmax taken: the time to the first token. */
  prefillMs: number;
  /** The other tokens' runs (tokens.length - 1 of them). */
  decodeMs: number;
}

export interface OrtPeer {
  readonly executionProvider: string;
  /** What onnxruntime-web logged while it placed the graph's nodes (a CPU fallback shows here). */
  readonly placementLog: string[];
  greedy(prompt: number[], maxTokens: number): Promise<PeerGreedyRun>;
  release(): Promise<void>;
}

export async function createOrtPeer(options: OrtPeerOptions): Promise<OrtPeer> {
  const { ort, manifest, executionProvider } = options;
  const presents = manifest.outputs.filter((n) => n.startsWith('present_'));
  const placementLog: string[] = [];
  let session: Ort.InferenceSession;
  try {
    session = await captureLog(placementLog, () =>
      ort.InferenceSession.create(options.graph, {
        executionProviders: [executionProvider],
        graphOptimizationLevel: 'all',
        logSeverityLevel: 0, // verbose while the graph is placed: the lines that name a node left to the CPU
        externalData: [{ path: manifest.location, data: options.externalData }],
        ...(executionProvider === 'webgpu' ? { preferredOutputLocation: Object.fromEntries(presents.map((n) => [n, 'gpu-buffer' as const])) } : {}),
      }),
    );
  } catch (err) {
    throw new PeerError(`onnxruntime-web could not create a ${executionProvider} session for the ONNX peer: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  const { heads, key_dim, value_dim, layers } = manifest.cache;
  const emptyCache = (): Record<string, Ort.Tensor> => {
    const feeds: Record<string, Ort.Tensor> = {};
    for (let l = 0; l < layers; l++) {
      feeds[`past_key.${l}`] = new ort.Tensor('float32', new Float32Array(0), [1, heads, 0, key_dim]);
      feeds[`past_value.${l}`] = new ort.Tensor('float32', new Float32Array(0), [1, heads, 0, value_dim]);
    }
    return feeds;
  };
  const ids = (tokens: number[]) => new ort.Tensor('int64', BigInt64Array.from(tokens, BigInt), [1, tokens.length]);
  const run = async (feeds: Record<string, Ort.Tensor>) => {
    try {
      return await session.run(feeds);
    } catch (err) {
      throw new PeerError(`the ONNX peer's run failed on ${executionProvider}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
  };

  return {
    executionProvider,
    placementLog,
    async greedy(prompt, maxTokens) {
      const tokens: number[] = [];
      const margins: number[] = [];
      let past = emptyCache();
      let prefillMs = 0;
      let decodeMs = 0;
      for (let n = 0; n < maxTokens; n++) {
        const started = performance.now();
        const out = await run({ input_ids: ids(n === 0 ? prompt : [tokens[n - 1]]), ...past });
        const best = top2((await out.logits.getData()) as Float32Array);
        const ms = performance.now() - started;
        if (n === 0) prefillMs = ms;
        else decodeMs += ms;
        tokens.push(best.id);
        margins.push(best.margin);
        out.logits.dispose();
        if (n > 0) for (const t of Object.values(past)) t.dispose();
        past = Object.fromEntries(presents.map((name) => [name.replace('present_', 'past_'), out[name]]));
      }
      for (const t of Object.values(past)) t.dispose();
      return { tokens, margins, prefillMs, decodeMs };
    },
    release: () => session.release(),
  };
}

/** Runs `f` with console.warn / log / error kept in `lines` (onnxruntime-web logs through them), not printed. */
async function captureLog<T>(lines: string[], f: () => Promise<T>): Promise<T> {
  const saved = { warn: console.warn, log: console.log, error: console.error };
  for (const k of ['warn', 'log', 'error'] as const) console[k] = (...args: unknown[]) => void lines.push(args.join(' '));
  try {
    return await f();
  } finally {
    Object.assign(console, saved);
  }
}
