// The ONNX peer in Node on onnxruntime-web's CPU (wasm) provider: decoder.onnx with its weights built
// from the shipped checkpoint by the manifest must decode what the torch model decodes
// (tools/train/fixtures/webmoe-kjv-12m.json, model.py on the same dequantised weights), and a
// manifest that does not fit the checkpoint is refused with a CheckpointError before onnxruntime runs.
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import * as ort from 'onnxruntime-web';
import { beforeAll, describe, expect, it } from 'vitest';
import { CheckpointError } from '../../errors.ts';
import { openCheckpoint, type Checkpoint } from '../../io/checkpoint_files.ts';
import { nodeDir } from '../../io/node_source.ts';
import { REPO_ROOT } from '../../testing/fixtures.ts';
import { compareGreedy } from './peer_compare.ts';
import { createOrtPeer } from './peer_ort.ts';
import { checkPeerManifest, peerExternalData, type PeerManifest } from './peer_weights.ts';

const PEER = resolve(REPO_ROOT, 'tools/peer/webmoe-kjv-12m');
const torch = JSON.parse(readFileSync(resolve(REPO_ROOT, 'tools/train/fixtures/webmoe-kjv-12m.json'), 'utf8')) as { greedy: { prompt: number[]; tokens: number[]; margins: number[] } };

let checkpoint: Checkpoint;
let manifest: PeerManifest;
beforeAll(async () => {
  ort.env.wasm.numThreads = 1;
  checkpoint = await openCheckpoint(nodeDir(resolve(REPO_ROOT, 'public/models/webmoe-kjv-12m')));
  manifest = checkPeerManifest(JSON.parse(readFileSync(resolve(PEER, 'manifest.json'), 'utf8')), 'manifest.json');
});

describe('the ONNX peer (onnxruntime-web, wasm provider)', () => {
  it('decodes the torch model’s greedy tokens, prefill in one run then one token a run', async () => {
    const peer = await createOrtPeer({ ort, graph: readFileSync(resolve(PEER, 'decoder.onnx')), manifest, externalData: await peerExternalData(manifest, checkpoint), executionProvider: 'wasm' });
    try {
      const { prompt, tokens, margins } = torch.greedy;
      const run = await peer.greedy(prompt, tokens.length);
      const c = compareGreedy(run.tokens, tokens, margins);
      expect(c.agreeWhereClear, `first disagreement ${JSON.stringify(c.firstDisagreement)}`).toBe(true);
      expect(c.agreeing).toBeGreaterThanOrEqual(8);
      // Where both agree, the margins are torch's to ~1e-3 (float32 in another order).
      for (let i = 0; i < c.agreeing; i++) expect(Math.abs(run.margins[i] - margins[i])).toBeLessThan(2e-3);
      expect(run.prefillMs).toBeGreaterThan(0);
    } finally {
      await peer.release();
    }
  });

  it('refuses a manifest that does not fit the checkpoint', async () => {
    const edit = (f: (m: PeerManifest) => void) => {
      const m = structuredClone(manifest);
      f(m);
      return peerExternalData(m, checkpoint);
    };
    await expect(edit((m) => (m.initializers[3].sources = ['model.layers.0.self_attn.q_x_proj.weight']))).rejects.toThrow(/q_x_proj.weight .*is not in the checkpoint: .*export_onnx.py/);
    await expect(edit((m) => (m.initializers[3].shape = [128, 256]))).rejects.toThrow(/needs 128x256 transposed: .*export_onnx.py/);
    await expect(edit((m) => (m.initializers[3].bytes = 12))).rejects.toThrow(CheckpointError);
    expect(() => checkPeerManifest({ format: 'other' }, 'manifest.json')).toThrow(/manifest.json: not a webmoe-onnx-peer\/1 manifest/);
  });
});
