import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config.ts';
import { ArgumentError } from '../../src/errors.ts';
import { DTYPE_SIZE, parseSafetensorsHeader, type TensorInfo } from '../../src/io/safetensors.ts';
import { checkTensors, expectedTensors } from '../../src/model/weights.ts';
import { e4m3ToF32 as decodeE4m3 } from '../../src/kernels/fp8_e4m3.ref.ts';
import { EDGE_CODES, generateCheckpoint } from './generate.ts';
import { DEEPSEEK_V3_671B, ODD, TINY } from './presets.ts';
import { quantizeFp8 } from '../../src/kernels/quantize_fp8.ref.ts';
import { bf16Bytes, bf16Values } from './tensor_data.ts';
import { writeCheckpoint } from './write.ts';

/** Every tensor of a generated checkpoint: its header entry and its bytes, from whichever file holds it. */
function readAll(files: Map<string, Uint8Array>): Map<string, { info: TensorInfo; data: Uint8Array }> {
  const out = new Map<string, { info: TensorInfo; data: Uint8Array }>();
  for (const [file, bytes] of files) {
    if (!file.endsWith('.safetensors')) continue;
    for (const [name, info] of parseSafetensorsHeader(bytes, file, bytes.byteLength).tensors) {
      expect(out.has(name), `${name} appears twice`).toBe(false);
      out.set(name, { info, data: bytes.subarray(info.byteOffset, info.byteOffset + info.byteLength) });
    }
  }
  return out;
}

/** Byte equality without vitest's element-by-element deep diff, which is slow on megabytes. */
function sameBytes(a: Uint8Array | undefined, b: Uint8Array | undefined): boolean {
  return !!a && !!b && Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

function f32(data: Uint8Array): Float32Array {
  return new Float32Array(data.slice().buffer);
}

const tinySingle = generateCheckpoint({ config: TINY, seed: 1 });
const tinySharded = generateCheckpoint({ config: TINY, seed: 1, shards: 3 });
const odd = generateCheckpoint({ config: ODD, seed: 5 });

describe('tensor_data', () => {
  it('rounds to bf16 to nearest even and keeps an all-zero FP8 block at scale 1', () => {
    const x = new Float32Array([1 + 2 ** -8, 1 + 3 * 2 ** -8, -2.5, 1 + 2 ** -8 + 2 ** -20]);
    expect([...bf16Values(bf16Bytes(x))]).toEqual([1, 1 + 2 ** -6, -2.5, 1 + 2 ** -7]);
    const { codes, scaleInv } = quantizeFp8(new Float32Array(130 * 3), 130, 3);
    expect([...scaleInv]).toEqual([1, 1]);
    expect(codes.every((c) => c === 0)).toBe(true);
  });
});

describe('generateCheckpoint', () => {
  it.each([
    ['tiny', TINY, tinySingle],
    ['tiny, 3 shards', TINY, tinySharded],
    ['odd', ODD, odd],
  ])('%s: has exactly the expected tensors, with the right bytes and alignment', (_label, raw, checkpoint) => {
    const config = parseConfig(raw);
    expect(parseConfig(new TextDecoder().decode(checkpoint.files.get('config.json')))).toEqual(config);
    const expected = expectedTensors(config);
    const tensors = readAll(checkpoint.files);
    const actual = new Map([...tensors].map(([name, t]) => [name, { dtype: t.info.dtype, shape: t.info.shape }]));
    expect(checkTensors(expected, actual)).toEqual({ missing: [], unexpected: [], mismatched: [] });
    const release = { fp8: 'F8_E4M3', bf16: 'BF16', f32: 'F32' } as const;
    for (const [name, spec] of expected) {
      const { info } = tensors.get(name)!;
      expect(info.dtype, name).toBe(release[spec.dtype]);
      expect(info.byteLength, name).toBe(spec.shape.reduce((a, b) => a * b, 1) * DTYPE_SIZE[info.dtype]);
      expect(info.byteOffset % DTYPE_SIZE[info.dtype], `${name} alignment`).toBe(0);
    }
  });

  it('quantises per 128x128 block: each block reaches 448 times its scale, partial edge blocks included', () => {
    const tensors = readAll(odd.files);
    // ODD's q_proj is [3 * 40, 200]: one row block, two column blocks (128 + 72 columns).
    const name = 'model.layers.1.self_attn.q_proj.weight';
    const codes = tensors.get(name)!.data;
    const scales = f32(tensors.get(`${name}_scale_inv`)!.data);
    expect(tensors.get(`${name}_scale_inv`)!.info.shape).toEqual([1, 2]);
    expect(scales[0]).not.toBe(scales[1]);
    for (const [block, c0, c1] of [[0, 0, 128], [1, 128, 200]]) {
      let amax = 0;
      for (let r = 0; r < 120; r++) for (let c = c0; c < c1; c++) amax = Math.max(amax, Math.abs(decodeE4m3(codes[r * 200 + c])));
      expect(amax, `block ${block}`).toBe(448);
      expect(scales[block]).toBeGreaterThan(0);
    }
    for (const [n, t] of tensors) {
      if (t.info.dtype === 'F8_E4M3') expect(t.data.some((c) => (c & 0x7f) === 0x7f), `NaN code in ${n}`).toBe(false);
    }
  });

  it('holds the edge e4m3 codes and the documented value ranges', () => {
    const tensors = readAll(tinySingle.files);
    expect([...tensors.get('model.layers.0.self_attn.q_a_proj.weight')!.data.subarray(0, 8)]).toEqual([...EDGE_CODES]);
    expect([...readAll(odd.files).get('model.layers.0.self_attn.q_proj.weight')!.data.subarray(0, 8)]).toEqual([...EDGE_CODES]);
    const norm = bf16Values(tensors.get('model.layers.2.post_attention_layernorm.weight')!.data);
    const mean = norm.reduce((a, b) => a + b, 0) / norm.length;
    expect(Math.abs(mean - 1)).toBeLessThan(0.05);
    const bias = f32(tensors.get('model.layers.3.mlp.gate.e_score_correction_bias')!.data);
    expect(bias.every((b) => Math.abs(b) <= 0.12)).toBe(true);
    expect(new Set(bias).size).toBe(12);
    // The MTP layer's embedding and head are copies of the main ones, as in the release.
    expect(sameBytes(tensors.get('model.layers.4.embed_tokens.weight')!.data, tensors.get('model.embed_tokens.weight')!.data)).toBe(true);
    expect(sameBytes(tensors.get('model.layers.4.shared_head.head.weight')!.data, tensors.get('lm_head.weight')!.data)).toBe(true);
  });

  it('is deterministic for a seed, and the seed matters', () => {
    const again = generateCheckpoint({ config: ODD, seed: 5 });
    expect([...again.files.keys()]).toEqual([...odd.files.keys()]);
    for (const [name, bytes] of odd.files) expect(sameBytes(again.files.get(name), bytes), name).toBe(true);
    const other = generateCheckpoint({ config: ODD, seed: 6 });
    expect(sameBytes(other.files.get('model.safetensors'), odd.files.get('model.safetensors'))).toBe(false);
  });

  it('shards consistently with the index, splitting a weight from its scales somewhere', () => {
    const files = tinySharded.files;
    expect([...files.keys()]).toEqual([
      'config.json',
      'model-00001-of-00003.safetensors',
      'model-00002-of-00003.safetensors',
      'model-00003-of-00003.safetensors',
      'model.safetensors.index.json',
    ]);
    const index = JSON.parse(new TextDecoder().decode(files.get('model.safetensors.index.json')));
    const single = readAll(tinySingle.files);
    let totalSize = 0;
    for (const [file, bytes] of files) {
      if (!file.endsWith('.safetensors')) continue;
      for (const [name, info] of parseSafetensorsHeader(bytes, file, bytes.byteLength).tensors) {
        expect(index.weight_map[name], name).toBe(file);
        // Same seed, same tensor bytes as the single-file layout.
        expect(sameBytes(bytes.subarray(info.byteOffset, info.byteOffset + info.byteLength), single.get(name)!.data), name).toBe(true);
        totalSize += info.byteLength;
      }
    }
    expect(Object.keys(index.weight_map).sort()).toEqual([...single.keys()].sort());
    expect(Object.keys(index.weight_map)).toEqual(Object.keys(index.weight_map).sort());
    expect(index.metadata.total_size).toBe(totalSize);
    const split = Object.keys(index.weight_map).filter((n) => n.endsWith('_scale_inv') && index.weight_map[n] !== index.weight_map[n.slice(0, -'_scale_inv'.length)]);
    expect(split.length).toBe(2);
    // Shards are near equal in size.
    const sizes = [1, 2, 3].map((k) => files.get(`model-0000${k}-of-00003.safetensors`)!.byteLength);
    expect(Math.max(...sizes) / Math.min(...sizes)).toBeLessThan(1.1);
  });

  it('refuses impossible requests with an ArgumentError', () => {
    expect(() => generateCheckpoint({ config: ODD, shards: 0 })).toThrow(ArgumentError);
    expect(() => generateCheckpoint({ config: ODD, shards: 1000 })).toThrow(ArgumentError);
    expect(() => generateCheckpoint({ config: DEEPSEEK_V3_671B })).toThrow(ArgumentError);
  });

  it('writeCheckpoint puts the same files on disk', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'webmoe-ckpt-'));
    try {
      const { files } = await writeCheckpoint(dir, { config: ODD, seed: 5, shards: 2 });
      expect([...files.keys()]).toHaveLength(4);
      for (const [name, bytes] of files) expect(sameBytes(readFileSync(join(dir, name)), bytes), name).toBe(true);
      expect(files.get('model-00001-of-00002.safetensors')).toBeDefined();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
