// The page's model-level peer: the shipped checkpoint in webmoe and, exported to ONNX
// (tools/peer/), in onnxruntime-web's WebGPU provider, in this browser. Everything is served by
// this site: the graph and its manifest from tools/peer/, ORT's wasm from node_modules (vite
// `?url`), and ORT's weights are built here from the checkpoint's model.safetensors.
// This module is imported when the peer runs, so the page does not load onnxruntime-web before.

import asyncifyWasm from 'onnxruntime-web/ort-wasm-simd-threaded.asyncify.wasm?url';
import jsepWasm from 'onnxruntime-web/ort-wasm-simd-threaded.jsep.wasm?url';
import graphUrl from '../../../tools/peer/webmoe-kjv-12m/decoder.onnx?url';
import manifestJson from '../../../tools/peer/webmoe-kjv-12m/manifest.json';
import { createEngine, FetchError, openCheckpoint, urlDir, type Engine, type Gpu } from '../../index.ts';
import { $, el } from '../demo/dom.ts';
import { ms, sig3, times, tokPerS } from './format.ts';
import { CLEAR_MARGIN } from './peer_compare.ts';
import { createOrtPeer, type OrtModule } from './peer_ort.ts';
import { placementText } from './peer_placement.ts';
import { runPeerComparison, type PeerReport } from './peer_run.ts';
import { checkPeerManifest, peerExternalData } from './peer_weights.ts';
import { fillTable } from './tables.ts';

/**
 * onnxruntime-web's two WebGPU implementations, both `executionProviders: ['webgpu']`: the native
 * WebGPU provider (C++ in the asyncify wasm, `onnxruntime-web/webgpu`) and JSEP (kernels in
 * JavaScript, the package's default entry).
 */
export const PEER_BUILDS = {
  webgpu: { load: () => import('onnxruntime-web/webgpu') as Promise<OrtModule>, wasm: asyncifyWasm, about: 'native WebGPU provider (onnxruntime-web/webgpu)' },
  jsep: { load: () => import('onnxruntime-web') as Promise<OrtModule>, wasm: jsepWasm, about: 'JSEP WebGPU provider (onnxruntime-web)' },
} as const;
export type PeerBuild = keyof typeof PEER_BUILDS;

const PROMPTS = ['In the beginning God created', 'And Jesus answered and said unto them,', 'def main():\n    ', 'The LORD is my shepherd;'];

export async function runPeer(gpu: Gpu, model: string, options: { quick: boolean; build: PeerBuild; onProgress: (line: string) => void }): Promise<PeerReport> {
  const manifest = checkPeerManifest(manifestJson, 'tools/peer/webmoe-kjv-12m/manifest.json');
  options.onProgress(`building the ONNX peer's weights from ${model}model.safetensors`);
  const externalData = await peerExternalData(manifest, await openCheckpoint(urlDir(model)));
  const response = await fetch(graphUrl);
  if (!response.ok) throw new FetchError(response.url, `HTTP ${response.status} for the ONNX peer's graph`, response.status);
  const graph = new Uint8Array(await response.arrayBuffer());

  const build = PEER_BUILDS[options.build];
  options.onProgress(`creating the onnxruntime-web session (${build.about})`);
  const ort = await build.load();
  ort.env.wasm.wasmPaths = { wasm: build.wasm };
  ort.env.wasm.numThreads = 1; // no cross-origin isolation here, so no wasm threads
  const peer = await createOrtPeer({ ort, graph, manifest, externalData, executionProvider: 'webgpu' });
  let engine: Engine | undefined;
  try {
    options.onProgress(`loading ${model} in webmoe`);
    engine = await createEngine({ model, gpu, worker: false, cacheShards: false });
    const a = gpu.adapter;
    return await runPeerComparison(engine, peer, {
      prompts: options.quick ? PROMPTS.slice(0, 1) : PROMPTS,
      maxTokens: options.quick ? 6 : 32,
      checkpoint: manifest.checkpoint,
      adapter: `${a.vendor} ${a.architecture} ${a.description}`.trim(),
      build: build.about,
      onProgress: options.onProgress,
    });
  } finally {
    await engine?.unload();
    await peer.release();
  }
}

export function showPeer(r: PeerReport): void {
  const engines = [
    ['webmoe', 'its WebGPU kernels, FP8 weights decoded in the kernel', r.webmoe],
    ['onnxruntime-web', `${r.ort.build}, float32 weights (the same FP8 values), k/v cache on the GPU`, r.ort],
  ] as const;
  fillTable(
    $<HTMLTableElement>('ort-peer'),
    [{ label: 'engine' }, { label: 'runs' }, { label: 'prefill', figure: true }, { label: 'decode', figure: true }, { label: 'decode, webmoe faster by', figure: true }],
    engines.map(([name, what, e]) => [
      name,
      what,
      { text: tokPerS(e.prefillTokensPerS), note: `${e.promptTokens} prompt tokens in ${ms(e.prefillMs)}` },
      { text: tokPerS(e.decodeTokensPerS), note: `${e.decodedTokens} tokens in ${ms(e.decodeMs)}` },
      e === r.webmoe ? '–' : times(r.webmoe.decodeTokensPerS / e.decodeTokensPerS),
    ]),
  );
  $('ort-peer').hidden = false;
  $('ort-agreement').replaceChildren(
    ...r.prompts.map((p, i) => {
      const c = p.comparison;
      const d = c.firstDisagreement;
      const text = d
        ? `first differs at token ${d.index + 1} of ${c.compared}: webmoe ${d.ours}, onnxruntime-web ${d.peer}; top-1 minus top-2 logit there ${sig3(d.peerMargin)} (onnxruntime-web), ${p.webmoeMarginThere === undefined ? '–' : sig3(p.webmoeMarginThere)} (webmoe)${c.agreeWhereClear ? '' : ` — a CLEAR margin (over ${CLEAR_MARGIN}): the engines disagree`}`
        : `all ${c.compared} greedy tokens agree`;
      return el('li', `prompt ${i + 1} (${p.promptTokens} tokens, ${JSON.stringify(p.prompt)}): ${text}`, { 'data-agree': String(c.agreeWhereClear), 'data-agreeing': String(c.agreeing) });
    }),
  );
  const fallback = `Placement: ${placementText(r.ort.placement)}.`;
  $('ort-peer-note').textContent = `${r.checkpoint} on ${r.adapter}: ${r.prompts.length} prompt${r.prompts.length === 1 ? '' : 's'}, ${r.maxTokens} greedy tokens each, on both engines. ${fallback}`;
  $('ort-peer-box').dataset.agree = String(r.agreeWhereClear);
}
