import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statfsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config.ts';
import { DTYPE_SIZE, parseSafetensorsHeader } from '../../src/io/safetensors.ts';
import { checkTensors, countParameters, expectedTensors } from '../../src/model/weights.ts';
import { generateCheckpoint, tensorBands } from './generate.ts';
import { INDEX_FILE, planCheckpoint, sizeCuts } from './layout.ts';
import { MOONLIGHT, MOONLIGHT_16B_A3B, ODD, PRESETS, REAL_SIZE_PRESETS, TINY, V3_DIMS } from './presets.ts';
import { writeCheckpointStreaming } from './stream.ts';

const ODD_BF16 = { ...ODD, quantization_config: null };
const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

// sha256 over (name, bytes) of every file, from the in-memory generator as it was before the
// band-wise rewrite: the tests and fixtures built on these checkpoints keep their values. A
// deliberate change of the conditioning updates these.
const CASES = [
  ['tiny', TINY, 1, 1, '78304d01b7130781366f6c51b4b86e3004bbf0e6811118776b93e340ad2a0fb4'],
  ['tiny, 3 shards', TINY, 1, 3, 'db5f106fee5f7d25a04c2aabdb5e2753ff5d263f1a7c7f82cd8b83b137801e56'],
  ['odd', ODD, 5, 1, '87839a4ab1ddba2965511d40e5a6ad4dcc989b2d620f572c272bd8c15909f0af'],
  ['odd, 2 shards', ODD, 5, 2, null],
  ['odd bf16 (no quantization_config)', ODD_BF16, 5, 1, null],
  ['odd bf16, 2 shards', ODD_BF16, 5, 2, '5d541d33d050ea851dfb19e6d3303e28ba99cc6ad8858205e1d3eed410403c79'],
] as const;

describe('writeCheckpointStreaming', () => {
  it.each(CASES)('%s: writes byte for byte the files of generateCheckpoint', async (_label, config, seed, shards, digest) => {
    const dir = mkdtempSync(join(tmpdir(), 'webmoe-stream-'));
    dirs.push(dir);
    const reports: number[] = [];
    const streamed = await writeCheckpointStreaming(dir, { config, seed, shards, onProgress: (p) => reports.push(p.bytesDone) });
    const { files } = generateCheckpoint({ config, seed, shards });
    expect(readdirSync(dir).sort()).toEqual([...files.keys()].sort());
    expect(streamed.files.map((f) => f.name)).toEqual([...files.keys()]);
    for (const [name, bytes] of files) {
      expect(sameBytes(readFileSync(join(dir, name)), bytes), name).toBe(true);
      expect(streamed.files.find((f) => f.name === name)!.bytes, name).toBe(bytes.byteLength);
    }
    expect(reports.at(-1)).toBe(streamed.layout.fileBytes);
    if (digest) {
      // generateCheckpoint itself still makes the bytes it made before tensors came in bands.
      const h = createHash('sha256');
      for (const [name, bytes] of files) h.update(name).update(bytes);
      expect(h.digest('hex')).toBe(digest);
    }
  });

  it('shards by size: files filled in order up to maxShardBytes, as generateCheckpoint does', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'webmoe-stream-'));
    dirs.push(dir);
    const maxShardBytes = 600_000;
    const { layout } = await writeCheckpointStreaming(dir, { config: ODD_BF16, seed: 2, maxShardBytes });
    expect(layout.files.length).toBeGreaterThanOrEqual(4);
    for (const f of layout.files) expect(f.size - f.header.byteLength, f.name).toBeLessThanOrEqual(maxShardBytes);
    const { files } = generateCheckpoint({ config: ODD_BF16, seed: 2, maxShardBytes });
    expect(readdirSync(dir).sort()).toEqual([...files.keys()].sort());
    for (const [name, bytes] of files) expect(sameBytes(readFileSync(join(dir, name)), bytes), name).toBe(true);
  });

  it('sizeCuts fills files in order; a tensor over the limit has a file of its own', () => {
    expect(sizeCuts([5, 20, 3, 4, 4].map((byteLength) => ({ byteLength })), 10)).toEqual([1, 2, 4]);
    expect(sizeCuts([{ byteLength: 7 }], 1)).toEqual([]);
  });

  // About 1 TB: V3's dimensions with a 2^24-token vocabulary (the embedding, head and their MTP copies).
  const HUGE = { ...V3_DIMS, vocab_size: 2 ** 24 };
  const free = statfsSync(tmpdir());
  it.skipIf(free.bavail * free.bsize > planCheckpoint(HUGE).fileBytes)('refuses a checkpoint larger than the free disk space before writing', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'webmoe-stream-'));
    dirs.push(dir);
    await expect(writeCheckpointStreaming(dir, { config: HUGE })).rejects.toThrow(/GiB on disk/);
    expect(readdirSync(dir)).toEqual([]);
  });
});

describe('real-size presets', () => {
  it('the parser accepts them, and the full Moonlight config', () => {
    for (const name of REAL_SIZE_PRESETS) expect(() => parseConfig(PRESETS[name]), name).not.toThrow();
    const full = parseConfig(MOONLIGHT_16B_A3B);
    expect(full).toMatchObject({
      hidden_size: 2048,
      num_hidden_layers: 27,
      q_lora_rank: null,
      n_group: 1,
      topk_group: 1,
      experts_per_group: 64,
      scoring_func: 'sigmoid',
      topk_method: 'noaux_tc',
      norm_topk_prob: true,
      routed_scaling_factor: 2.446,
      rope_scaling: null,
      quantization_config: null,
      mtp_layer_index: null,
      eos_token_ids: [163586],
    });
    expect(countParameters(full).total / 1e9).toBeCloseTo(15.96, 2);
    const v3 = parseConfig(V3_DIMS);
    expect(v3).toMatchObject({ hidden_size: 7168, q_lora_rank: 1536, n_routed_experts: 16, experts_per_group: 2, num_experts_per_tok: 8, mtp_layer_index: 2 });
    expect(v3.quantization_config).not.toBeNull();
  });

  it.each([
    ['moonlight', MOONLIGHT, 2 ** 30],
    ['v3-dims', V3_DIMS, undefined],
  ])('%s: headers, offsets and index computed without a tensor byte', (_label, raw, maxShardBytes) => {
    const started = performance.now();
    const layout = planCheckpoint(raw, { maxShardBytes });
    expect(performance.now() - started).toBeLessThan(2000);
    const limit = maxShardBytes ?? 4 * 2 ** 30;
    const config = parseConfig(raw);
    const actual = new Map<string, { dtype: string; shape: readonly number[] }>();
    for (const f of layout.files) {
      // The header alone parses, against the size the file will have.
      const header = parseSafetensorsHeader(f.header, f.name, f.size);
      expect(header.metadata).toEqual({ format: 'pt' });
      let end = f.header.byteLength;
      for (const info of header.tensors.values()) {
        expect(info.byteOffset, info.name).toBe(end); // back to back, in file order
        expect(info.byteOffset % DTYPE_SIZE[info.dtype], `${info.name} alignment`).toBe(0);
        expect(f.offsets.get(info.name)).toBe(info.byteOffset);
        end += info.byteLength;
        actual.set(info.name, info);
      }
      expect(end).toBe(f.size);
      if (f.tensors.length > 1) expect(f.size - f.header.byteLength, f.name).toBeLessThanOrEqual(limit);
    }
    expect(checkTensors(expectedTensors(config), actual)).toEqual({ missing: [], unexpected: [], mismatched: [] });
    expect(layout.fileBytes).toBe(layout.tensorBytes + layout.files.reduce((sum, f) => sum + f.header.byteLength, 0));
    expect(layout.files.length).toBeGreaterThan(1);
    const index = JSON.parse(new TextDecoder().decode(layout.index!));
    expect(index.metadata.total_size).toBe(layout.tensorBytes);
    expect(Object.keys(index.weight_map)).toHaveLength(actual.size);
    expect(INDEX_FILE).toBe('model.safetensors.index.json');
  });

  it('a band is 128 rows, made without the rest of the tensor', () => {
    const config = parseConfig(MOONLIGHT);
    const bands = tensorBands(config, 0, 'model.embed_tokens.weight');
    const first = bands.next().value!;
    expect(first.row).toBe(0);
    expect(first.data.byteLength).toBe(128 * 2048 * 2);
    expect(bands.next().value!.row).toBe(128);
  });
});
