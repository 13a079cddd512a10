import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ArgumentError, CheckpointError } from '../errors.ts';
import { isEngineDtype, MAX_HEADER_BYTES, parseSafetensorsHeader, readSafetensorsHeader } from './safetensors.ts';
import { writeSafetensors } from './safetensors_write.ts';
import { bytesSource, type ByteSource } from './sources.ts';

const FIXTURE = resolve(import.meta.dirname, '../../../shared/fixtures/dsv3-tiny-official');

/** A file with any header text (valid or not) and `dataLength` data bytes (value = index). */
function rawFile(header: unknown, dataLength = 0, declaredLength?: bigint): Uint8Array {
  const json = new TextEncoder().encode(typeof header === 'string' ? header : JSON.stringify(header));
  const out = new Uint8Array(8 + json.byteLength + dataLength);
  new DataView(out.buffer).setBigUint64(0, declaredLength ?? BigInt(json.byteLength), true);
  out.set(json, 8);
  for (let i = 0; i < dataLength; i++) out[8 + json.byteLength + i] = i & 255;
  return out;
}

const parse = (bytes: Uint8Array) => parseSafetensorsHeader(bytes, 'x.safetensors', bytes.byteLength);

/** Expect a CheckpointError naming the file, whose message matches `pattern`. */
function expectBad(bytes: Uint8Array, pattern: RegExp): void {
  let caught: unknown;
  try {
    parse(bytes);
  } catch (e) {
    caught = e;
  }
  expect(caught).toBeInstanceOf(CheckpointError);
  expect((caught as CheckpointError).file).toBe('x.safetensors');
  expect((caught as Error).message).toMatch(/^x\.safetensors: /);
  expect((caught as Error).message).toMatch(pattern);
}

const ok = { dtype: 'F32', shape: [2, 3], data_offsets: [0, 24] };

describe('parseSafetensorsHeader', () => {
  it('parses tensors with absolute offsets and metadata', () => {
    const bytes = rawFile({ __metadata__: { format: 'pt' }, b: { dtype: 'BF16', shape: [3], data_offsets: [24, 30] }, a: ok }, 30);
    const h = parse(bytes);
    const dataStart = bytes.byteLength - 30;
    expect(h.headerLength).toBe(dataStart - 8);
    expect(h.metadata).toEqual({ format: 'pt' });
    expect([...h.tensors.keys()]).toEqual(['a', 'b']); // file order
    expect(h.tensors.get('a')).toEqual({ name: 'a', dtype: 'F32', shape: [2, 3], byteOffset: dataStart, byteLength: 24, file: 'x.safetensors' });
    expect(h.tensors.get('b')).toMatchObject({ byteOffset: dataStart + 24, byteLength: 6 });
  });

  it('accepts an empty header, scalars, zero-size tensors and padding spaces', () => {
    expect(parse(rawFile({})).tensors.size).toBe(0);
    const h = parse(rawFile('{"s":{"dtype":"F32","shape":[],"data_offsets":[0,4]},"z":{"dtype":"F16","shape":[0,5],"data_offsets":[4,4]}}   ', 4));
    expect(h.tensors.get('s')!.byteLength).toBe(4);
    expect(h.tensors.get('z')!.byteLength).toBe(0);
    expect(h.metadata).toBeNull();
  });

  it('parses I64/I32/U8/BOOL but flags them as not computed by the engine', () => {
    const h = parse(rawFile({ ids: { dtype: 'I64', shape: [2], data_offsets: [0, 16] }, m: { dtype: 'BOOL', shape: [3], data_offsets: [16, 19] } }, 19));
    expect(h.tensors.get('ids')!.dtype).toBe('I64');
    expect(isEngineDtype('I64')).toBe(false);
    expect(isEngineDtype('BOOL')).toBe(false);
    for (const d of ['F8_E4M3', 'BF16', 'F16', 'F32']) expect(isEngineDtype(d)).toBe(true);
  });

  it('refuses a bad header length', () => {
    expectBad(new Uint8Array(5), /5 bytes, too short/);
    expectBad(rawFile({}, 0, 2n ** 40n), /over the 100000000-byte limit/);
    expectBad(rawFile({}, 0, BigInt(MAX_HEADER_BYTES + 1)), /limit/);
    expectBad(rawFile({}, 0, 1000n), /runs past the end of the file/);
    expectBad(rawFile('', 8, 0n), /too short for a JSON object/);
  });

  it('refuses a header that is not UTF-8 JSON of an object', () => {
    const notUtf8 = rawFile('{"a":1}');
    notUtf8[10] = 0xff;
    expectBad(notUtf8, /not valid UTF-8/);
    expectBad(rawFile('{"a": '), /not valid JSON/);
    expectBad(rawFile('[1,2]'), /not a JSON object/);
    expectBad(rawFile('null'), /not a JSON object/);
    expectBad(rawFile('12'), /not a JSON object/);
  });

  it('refuses bad __metadata__', () => {
    expectBad(rawFile({ __metadata__: 'pt' }), /"__metadata__" must be an object/);
    expectBad(rawFile({ __metadata__: ['pt'] }), /"__metadata__" must be an object/);
    expectBad(rawFile({ __metadata__: { format: 1 } }), /"__metadata__"."format" must be a string/);
  });

  it('refuses a bad dtype, naming the tensor and the dtype', () => {
    expectBad(rawFile({ w: { ...ok, dtype: 'F64' } }, 24), /tensor "w": dtype "F64" is not supported/);
    expectBad(rawFile({ w: { ...ok, dtype: 4 } }, 24), /tensor "w": dtype 4 is not supported/);
    expectBad(rawFile({ w: { shape: [2, 3], data_offsets: [0, 24] } }, 24), /tensor "w": dtype undefined/);
    expectBad(rawFile({ w: { ...ok, dtype: 'toString' } }, 24), /dtype "toString"/);
    expectBad(rawFile({ w: 5 }, 24), /tensor "w": entry must be an object/);
    expectBad(rawFile({ w: [ok] }, 24), /tensor "w": entry must be an object/);
  });

  it('refuses a bad shape', () => {
    for (const shape of [undefined, 6, '6', [2, -3], [2, 1.5], [2, '3'], [[2, 3]], [2, null]]) {
      expectBad(rawFile({ w: { ...ok, shape } }, 24), /tensor "w": shape .* must be an array of non-negative integers/);
    }
    expectBad(rawFile({ w: { ...ok, shape: [2 ** 30, 2 ** 30, 2 ** 30] } }, 24), /tensor "w": shape .* is too large/);
  });

  it('refuses bad data_offsets', () => {
    for (const data_offsets of [undefined, [0], [0, 24, 48], [-1, 23], [0, 23.5], ['0', '24'], [0, 2 ** 60]]) {
      expectBad(rawFile({ w: { ...ok, data_offsets } }, 24), /tensor "w": data_offsets/);
    }
    expectBad(rawFile({ w: { ...ok, data_offsets: [24, 0] } }, 24), /tensor "w": data_offsets \[24, 0\] end before they begin/);
    expectBad(rawFile({ w: { ...ok, data_offsets: [8, 32] } }, 24), /tensor "w": data_offsets \[8, 32\] run past the data section \(24 bytes\)/);
  });

  it('refuses a byte count that does not match dtype and shape', () => {
    expectBad(rawFile({ w: { ...ok, data_offsets: [0, 20] } }, 24), /tensor "w": data_offsets \[0, 20\] hold 20 bytes, but F32 \[2, 3\] needs 24/);
    expectBad(rawFile({ w: { ...ok, dtype: 'BF16' } }, 24), /needs 12/);
  });

  it('refuses overlapping tensors, naming both', () => {
    const b = { dtype: 'U8', shape: [8], data_offsets: [20, 28] };
    expectBad(rawFile({ a: ok, b }, 28), /tensors "a" and "b" overlap/);
    // Same range twice, and one tensor inside another.
    expectBad(rawFile({ a: ok, b: ok }, 24), /overlap/);
    expectBad(rawFile({ a: ok, b: { dtype: 'U8', shape: [4], data_offsets: [4, 8] } }, 24), /overlap/);
    // Touching is fine; so are gaps and an empty tensor inside another's range.
    expect(parse(rawFile({ a: ok, b: { ...b, data_offsets: [24, 32] }, e: { dtype: 'U8', shape: [0], data_offsets: [4, 4] } }, 40)).tensors.size).toBe(3);
  });

  it('refuses a tensor named twice, and any key repeated in an entry or the metadata', () => {
    // JSON.parse would keep the second silently.
    const twice = `{"w":${JSON.stringify(ok)},"w":{"dtype":"U8","shape":[24],"data_offsets":[0,24]}}`;
    expectBad(rawFile(twice, 24), /"w" appears twice in the header/);
    // The same key spelled with an escape is still the same key.
    expectBad(rawFile(`{"w":${JSON.stringify(ok)},"\u0077":${JSON.stringify(ok)}}`, 24), /"w" appears twice in the header/);
    expectBad(rawFile('{"w":{"dtype":"F32","dtype":"U8","shape":[2,3],"data_offsets":[0,24]}}', 24), /"dtype" appears twice in the entry "w"/);
    expectBad(rawFile(`{"__metadata__":{"format":"pt","format":"np"},"w":${JSON.stringify(ok)}}`, 24), /"format" appears twice in the entry "__metadata__"/);
    // Equal strings as values, or in different objects, are not duplicates; nor are quotes inside names.
    const fine = { 'a"b': ok, 'a\\"b': { ...ok, data_offsets: [24, 48] }, __metadata__: { format: 'w', w: 'w' } };
    expect(parse(rawFile(fine, 48)).tensors.size).toBe(2);
  });

  it('accepts a zero-size tensor whatever its other dimensions', () => {
    for (const shape of [[2 ** 26, 2 ** 26, 0], [0, 2 ** 53 - 1, 2 ** 53 - 1, 2 ** 53 - 1, 2 ** 53 - 1, 2 ** 53 - 1, 2 ** 53 - 1]]) {
      const h = parse(rawFile({ z: { dtype: 'F32', shape, data_offsets: [0, 0] } }));
      expect(h.tensors.get('z')).toMatchObject({ shape, byteLength: 0 });
    }
    expectBad(rawFile({ z: { dtype: 'F32', shape: [2 ** 26, 2 ** 26, 0], data_offsets: [0, 4] } }, 4), /hold 4 bytes, but F32 .* needs 0/);
  });

  it('refuses a header given too few bytes', () => {
    const bytes = rawFile({ w: ok }, 24);
    expect(() => parseSafetensorsHeader(bytes.subarray(0, 20), 'x.safetensors', bytes.byteLength)).toThrow(/got 20 bytes, the header needs/);
  });
});

describe('readSafetensorsHeader', () => {
  it('reads the header in two reads: the length, then the JSON', async () => {
    const file = writeSafetensors({ w: { dtype: 'F32', shape: [2], data: new Float32Array([1, 2]) } });
    const inner = bytesSource('w.safetensors', file);
    const reads: [number, number][] = [];
    const counting: ByteSource = { name: inner.name, size: inner.size, read: (o, l, s) => (reads.push([o, l]), inner.read(o, l, s)) };
    const h = await readSafetensorsHeader(counting);
    expect(reads).toEqual([[0, 8], [8, h.headerLength]]);
    expect(h.tensors.get('w')!.byteOffset).toBe(8 + h.headerLength);
  });

  it('refuses a file shorter than 8 bytes without reading past it', async () => {
    await expect(readSafetensorsHeader(bytesSource('tiny.safetensors', new Uint8Array(3)))).rejects.toThrow(/tiny\.safetensors: the file is 3 bytes/);
  });

  it('reads the official fixture: 331 tensors of F8_E4M3, BF16 and F32', async () => {
    const bytes = new Uint8Array(readFileSync(resolve(FIXTURE, 'model.safetensors')));
    const h = await readSafetensorsHeader(bytesSource('model.safetensors', bytes));
    expect(h.tensors.size).toBe(331);
    expect(h.metadata).toEqual({ format: 'pt' });
    const q = h.tensors.get('model.layers.0.self_attn.kv_a_proj_with_mqa.weight')!;
    expect(q).toMatchObject({ dtype: 'F8_E4M3', shape: [288, 128], byteLength: 288 * 128 });
    expect(h.tensors.get('model.layers.0.self_attn.kv_a_proj_with_mqa.weight_scale_inv')).toMatchObject({ dtype: 'F32', shape: [3, 1] });
    const counts: Record<string, number> = {};
    for (const t of h.tensors.values()) counts[t.dtype] = (counts[t.dtype] ?? 0) + 1;
    expect(counts).toEqual({ F8_E4M3: 148, BF16: 32, F32: 151 });
  });
});

describe('writeSafetensors', () => {
  it('writes what the parser reads back, 8-byte aligned, bytes in place', () => {
    const odd = new Uint8Array([1, 2, 3, 4, 5, 6, 7]);
    const file = writeSafetensors(
      { f: { dtype: 'F32', shape: [3], data: new Float32Array([1, -2, 3.5]) }, odd: { dtype: 'F8_E4M3', shape: [7], data: odd } },
      { format: 'pt' },
    );
    const h = parse(file);
    expect((8 + h.headerLength) % 8).toBe(0);
    expect(h.metadata).toEqual({ format: 'pt' });
    const f = h.tensors.get('f')!;
    expect(Array.from(new Float32Array(file.slice(f.byteOffset, f.byteOffset + f.byteLength).buffer))).toEqual([1, -2, 3.5]);
    const o = h.tensors.get('odd')!;
    expect(Array.from(file.subarray(o.byteOffset, o.byteOffset + 7))).toEqual(Array.from(odd));
    expect(o.byteOffset + 7).toBe(file.byteLength);
  });

  it('refuses data of the wrong size', () => {
    expect(() => writeSafetensors({ w: { dtype: 'BF16', shape: [3], data: new Uint8Array(5) } })).toThrow(ArgumentError);
  });
});
