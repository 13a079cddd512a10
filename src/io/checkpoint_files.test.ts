import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CheckpointError, MissingFileError } from '../errors.ts';
import { getTensor, INDEX_FILE, openCheckpoint } from './checkpoint_files.ts';
import { nodeDir } from './node_source.ts';
import { writeSafetensors } from './safetensors_write.ts';
import { memoryDir, TEXT_FILE_MAX_BYTES, type CheckpointDir } from './sources.ts';

// The repo is cloned with shared/ beside it.
const FIXTURE = resolve(import.meta.dirname, '../../../shared/fixtures/dsv3-tiny-official');
const SHARD1 = 'model-00001-of-00002.safetensors';
const SHARD2 = 'model-00002-of-00002.safetensors';
const UP = 'model.layers.3.mlp.experts.10.up_proj.weight';

const read = (f: string) => new Uint8Array(readFileSync(resolve(FIXTURE, f)));
const shardedFiles = () => ({
  'config.json': read('sharded/config.json'),
  [SHARD1]: read(`sharded/${SHARD1}`),
  [SHARD2]: read(`sharded/${SHARD2}`),
});
const index = () => JSON.parse(readFileSync(resolve(FIXTURE, 'sharded', INDEX_FILE), 'utf8')) as { metadata: Record<string, unknown>; weight_map: Record<string, string> };

/** openCheckpoint on the sharded fixture with its index changed by `edit`. */
function withIndex(edit: (idx: ReturnType<typeof index>) => unknown, files: Record<string, Uint8Array | string> = shardedFiles()) {
  const idx = index();
  const text = edit(idx);
  return openCheckpoint(memoryDir('mem', { ...files, [INDEX_FILE]: typeof text === 'string' ? text : JSON.stringify(idx) }));
}

describe('openCheckpoint on the official tiny fixture', () => {
  it('resolves the sharded layout through the index: weight and scale in different shards', async () => {
    const ckpt = await openCheckpoint(nodeDir(resolve(FIXTURE, 'sharded')));
    expect(ckpt.layout).toBe('sharded');
    expect(ckpt.files).toEqual([SHARD1, SHARD2]);
    expect(ckpt.tensors.size).toBe(331);
    expect(getTensor(ckpt, UP).file).toBe(SHARD1);
    expect(getTensor(ckpt, `${UP}_scale_inv`).file).toBe(SHARD2);
    expect(ckpt.totalBytes).toBe(index().metadata.total_size);
    expect(Object.values(ckpt.bytesByDtype).reduce((a, b) => a + b)).toBe(ckpt.totalBytes);
    expect(Object.keys(ckpt.bytesByDtype).sort()).toEqual(['BF16', 'F32', 'F8_E4M3']);
    expect(JSON.parse(ckpt.configText).num_hidden_layers).toBe(4);
    expect(() => getTensor(ckpt, 'model.layers.9.mlp.gate.weight')).toThrow(/tensor "model\.layers\.9\.mlp\.gate\.weight" is missing/);
  });

  it('the single file gives the same tensors with identical bytes', async () => {
    const single = await openCheckpoint(nodeDir(FIXTURE));
    const sharded = await openCheckpoint(nodeDir(resolve(FIXTURE, 'sharded')));
    expect(single.layout).toBe('single');
    expect(single.files).toEqual(['model.safetensors']);
    expect([...single.tensors.keys()].sort()).toEqual([...sharded.tensors.keys()].sort());
    expect(single.bytesByDtype).toEqual(sharded.bytesByDtype);
    for (const [name, a] of single.tensors) {
      const b = sharded.tensors.get(name)!;
      expect([a.dtype, a.shape]).toEqual([b.dtype, b.shape]);
      const bytesA = await single.sources.get(a.file)!.read(a.byteOffset, a.byteLength);
      const bytesB = await sharded.sources.get(b.file)!.read(b.byteOffset, b.byteLength);
      if (Buffer.compare(bytesA, bytesB) !== 0) throw new Error(`${name} differs between the layouts`);
    }
  });
});

describe('openCheckpoint refuses a broken checkpoint', () => {
  it('a shard named by the index is missing', async () => {
    const { [SHARD2]: _, ...files } = shardedFiles();
    const e = await withIndex(() => {}, files).catch((x) => x);
    expect(e).toBeInstanceOf(MissingFileError);
    expect(e.message).toBe(`${SHARD2} not found in mem (named in ${INDEX_FILE})`);
  });

  it('metadata.total_size does not match the tensors', async () => {
    await expect(withIndex((i) => void (i.metadata.total_size = 4429171))).rejects.toThrow(
      `${INDEX_FILE}: metadata.total_size is 4429171, but the shards' tensors hold 4429172 bytes`,
    );
    await expect(withIndex((i) => void (i.metadata.total_size = '4429172'))).rejects.toThrow(/total_size must be a non-negative integer/);
    // Absent is fine.
    await expect(withIndex((i) => void (i.metadata = {}))).resolves.toMatchObject({ totalBytes: 4429172 });
  });

  it('the index is not valid', async () => {
    await expect(withIndex(() => '{"weight_map": ')).rejects.toThrow(/model\.safetensors\.index\.json: not valid JSON/);
    await expect(withIndex(() => '[]')).rejects.toThrow(/must be a JSON object/);
    await expect(withIndex(() => '{"metadata": {}}')).rejects.toThrow(/"weight_map" must be an object/);
    await expect(withIndex(() => '{"weight_map": {}}')).rejects.toThrow(/"weight_map" is empty/);
    await expect(withIndex((i) => void (i.weight_map[UP] = `../${SHARD1}`))).rejects.toThrow(/must be a file name in the same folder/);
    await expect(withIndex((i) => void (i.weight_map[UP] = 7 as unknown as string))).rejects.toThrow(CheckpointError);
  });

  it('index and shards disagree about a tensor', async () => {
    await expect(withIndex((i) => void (i.weight_map['extra.weight'] = SHARD1))).rejects.toThrow(
      `weight_map puts tensor "extra.weight" in ${SHARD1}, which does not contain it`,
    );
    await expect(withIndex((i) => void (i.weight_map[UP] = SHARD2))).rejects.toThrow(`tensor "${UP}" is in ${SHARD1}, but weight_map puts it in ${SHARD2}`);
    await expect(withIndex((i) => void delete i.weight_map[UP])).rejects.toThrow(`tensor "${UP}" is in ${SHARD1} but not in weight_map`);
  });

  it('a tensor in two shards', async () => {
    const t = { dtype: 'F32' as const, shape: [1], data: new Float32Array([1]) };
    const files = { 'config.json': '{}', 'a.safetensors': writeSafetensors({ x: t, y: t }), 'b.safetensors': writeSafetensors({ x: t }) };
    // A shard the index does not name is not read.
    const ok = await withIndex(() => JSON.stringify({ weight_map: { x: 'a.safetensors', y: 'a.safetensors' } }), files);
    expect(ok.files).toEqual(['a.safetensors']);
    const e2 = await withIndex(() => JSON.stringify({ weight_map: { x: 'a.safetensors', y: 'b.safetensors' } }), files).catch((x) => x);
    expect(e2.message).toBe(`${INDEX_FILE}: tensor "x" is in both a.safetensors and b.safetensors`);
  });

  it('no weights, no config', async () => {
    await expect(openCheckpoint(memoryDir('mem', { 'config.json': '{}' }))).rejects.toThrow(
      `${INDEX_FILE} or model.safetensors not found in mem`,
    );
    await expect(openCheckpoint(memoryDir('mem', { 'model.safetensors': writeSafetensors({}) }))).rejects.toThrow('config.json not found in mem');
  });

  it('config.json and the index are read with their caps', async () => {
    const asked: [string, number | undefined][] = [];
    const inner = memoryDir('mem', { ...shardedFiles(), [INDEX_FILE]: JSON.stringify(index()) });
    const spy: CheckpointDir = { ...inner, readText: (file, signal, maxBytes) => (asked.push([file, maxBytes]), inner.readText(file, signal, maxBytes)) };
    await openCheckpoint(spy);
    expect(asked).toEqual([['config.json', 1 << 20], [INDEX_FILE, 64 << 20]]);
    expect(TEXT_FILE_MAX_BYTES[INDEX_FILE]).toBe(64 << 20);
    // A config.json of 1 MiB + 1 (the review's /dev/zero, made finite) is refused by name.
    const huge = { ...shardedFiles(), 'config.json': new Uint8Array((1 << 20) + 1).fill(0x20) };
    await expect(withIndex(() => {}, huge)).rejects.toThrow(`config.json is over ${1 << 20} bytes`);
  });

  it('a corrupt shard header names the shard', async () => {
    const files = shardedFiles();
    files[SHARD2] = files[SHARD2].slice(0, 100);
    await expect(withIndex(() => {}, files)).rejects.toThrow(new RegExp(`^${SHARD2}: header length \\d+ runs past the end`));
  });
});
