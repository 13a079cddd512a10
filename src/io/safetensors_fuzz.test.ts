// Thousands of corrupted safetensors files: each must parse into a self-consistent header or
// throw a CheckpointError; any other exception (TypeError, RangeError, ...) is a bug.
import { describe, expect, it } from 'vitest';
import { CheckpointError } from '../errors.ts';
import { rng, testSeed } from '../gpu/testing.ts';
import { DTYPE_SIZE, parseSafetensorsHeader, readSafetensorsHeader, shapeSize, type Dtype, type SafetensorsHeader } from './safetensors.ts';
import { writeSafetensors, type TensorToWrite } from './safetensors_write.ts';
import { bytesSource } from './sources.ts';

const DTYPES = Object.keys(DTYPE_SIZE) as Dtype[];
const WEIRD: unknown[] = [-1, 0, 1, 3, 1.5, 2 ** 31, 2 ** 53, 2 ** 64, 1e308, -0, 'x', '', 'F64', 'F32', 'BF16', null, true, [], {}, [0], [0, 1, 2], [-1, 5], [5, 1], [0, 2 ** 60], ['0', '4'], [2 ** 30, 2 ** 30, 2 ** 30], { a: 1 }];

function randomFile(next: () => number): Uint8Array {
  const tensors: Record<string, TensorToWrite> = {};
  const n = 1 + Math.floor(next() * 5);
  for (let i = 0; i < n; i++) {
    const dtype = DTYPES[Math.floor(next() * DTYPES.length)];
    const shape = Array.from({ length: Math.floor(next() * 4) }, () => Math.floor(next() * 5));
    const data = new Uint8Array(shapeSize(shape) * DTYPE_SIZE[dtype]).map(() => Math.floor(next() * 256));
    tensors[`model.layers.${i}.w`] = { dtype, shape, data };
  }
  return writeSafetensors(tensors, next() < 0.5 ? { format: 'pt' } : undefined);
}

function withHeader(file: Uint8Array, json: string): Uint8Array {
  const oldLength = Number(new DataView(file.buffer, file.byteOffset).getBigUint64(0, true));
  const header = new TextEncoder().encode(json);
  const data = file.subarray(8 + oldLength);
  const out = new Uint8Array(8 + header.byteLength + data.byteLength);
  new DataView(out.buffer).setBigUint64(0, BigInt(header.byteLength), true);
  out.set(header, 8);
  out.set(data, 8 + header.byteLength);
  return out;
}

/** One random corruption of a valid file. */
function mutate(file: Uint8Array, next: () => number): Uint8Array {
  const pick = <T,>(xs: readonly T[]): T => xs[Math.floor(next() * xs.length)];
  const headerLength = Number(new DataView(file.buffer, file.byteOffset).getBigUint64(0, true));
  const out = file.slice();
  switch (Math.floor(next() * 7)) {
    case 0: // flip bytes in the JSON
      for (let k = 1 + Math.floor(next() * 4); k > 0; k--) out[8 + Math.floor(next() * headerLength)] = Math.floor(next() * 256);
      return out;
    case 1: // flip a byte of the length
      out[Math.floor(next() * 8)] = Math.floor(next() * 256);
      return out;
    case 2: // truncate anywhere
      return out.subarray(0, Math.floor(next() * out.byteLength));
    case 3: { // a different declared length
      const n = next() < 0.5 ? BigInt(Math.max(0, headerLength + Math.floor(next() * 33) - 16)) : BigInt(Math.floor(next() * 2 ** 52)) * 4096n;
      new DataView(out.buffer).setBigUint64(0, n & 0xffffffffffffffffn, true);
      return out;
    }
    case 4: { // insert or delete a byte inside the JSON without fixing the length
      const at = 8 + Math.floor(next() * headerLength);
      if (next() < 0.5) return new Uint8Array([...out.subarray(0, at), ...out.subarray(at + 1)]);
      return new Uint8Array([...out.subarray(0, at), Math.floor(next() * 256), ...out.subarray(at)]);
    }
    case 5: { // append bytes to the data section: still valid
      const more = new Uint8Array(out.byteLength + 1 + Math.floor(next() * 16));
      more.set(out);
      return more;
    }
    default: { // a JSON edit: wrong types, bad numbers, overlaps, bad dtype, shape mismatch
      const json = JSON.parse(new TextDecoder().decode(out.subarray(8, 8 + headerLength))) as Record<string, Record<string, unknown>>;
      const names = Object.keys(json).filter((k) => k !== '__metadata__');
      const name = pick(names);
      const entry = json[name];
      const field = pick(['dtype', 'shape', 'data_offsets', 'dtype', 'shape', 'data_offsets', 'extra', 'entry', 'metadata']);
      if (field === 'entry') json[name] = pick(WEIRD) as Record<string, unknown>;
      else if (field === 'metadata') (json as Record<string, unknown>).__metadata__ = pick([{ a: 1 }, 'pt', [], { a: 'b' }, null]);
      else if (field === 'data_offsets' && next() < 0.5) {
        const [b, e] = entry.data_offsets as number[];
        const other = json[pick(names)].data_offsets as number[];
        entry.data_offsets = pick([other, [b, e + 1], [b - 1, e], [b + 1, e + 1], [e, b], [b, e * 2 + 8]]);
      } else if (field === 'shape' && next() < 0.5) {
        const shape = [...(entry.shape as number[])];
        if (shape.length && next() < 0.5) shape[0] += pick([1, -1]);
        else shape.push(pick([0, 1, 2]));
        entry.shape = shape;
      } else if (field === 'dtype' && next() < 0.5) entry.dtype = pick([...DTYPES, 'F64', 'I8', 'f32', 'F8_E5M2']);
      else entry[field] = pick(WEIRD);
      return withHeader(out, JSON.stringify(json));
    }
  }
}

/** What a parsed header promises: everything inside the data section, sized by dtype and shape, no overlaps. */
function checkConsistent(h: SafetensorsHeader, fileSize: number): void {
  const dataStart = 8 + h.headerLength;
  const sorted = [...h.tensors.values()].sort((a, b) => a.byteOffset - b.byteOffset);
  let end = dataStart;
  for (const t of sorted) {
    expect(Object.hasOwn(DTYPE_SIZE, t.dtype)).toBe(true);
    expect(t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)).toBe(true);
    expect(t.byteLength).toBe(shapeSize(t.shape) * DTYPE_SIZE[t.dtype]);
    expect(t.byteOffset).toBeGreaterThanOrEqual(dataStart);
    expect(t.byteOffset + t.byteLength).toBeLessThanOrEqual(fileSize);
    if (t.byteLength > 0) {
      expect(t.byteOffset).toBeGreaterThanOrEqual(end);
      end = t.byteOffset + t.byteLength;
    }
  }
}

describe('safetensors header fuzz', () => {
  it('3000 corrupted files: a consistent header or a CheckpointError, nothing else', async () => {
    const next = rng(testSeed('safetensors fuzz'));
    const outcomes = { parsed: 0, refused: 0 };
    const start = performance.now();
    for (let i = 0; i < 3000; i++) {
      const bytes = mutate(randomFile(next), next);
      let header: SafetensorsHeader | undefined;
      try {
        // Every tenth case goes through a ByteSource, the way files are really read.
        header = i % 10 === 0
          ? await readSafetensorsHeader(bytesSource('fuzz.safetensors', bytes))
          : parseSafetensorsHeader(bytes, 'fuzz.safetensors', bytes.byteLength);
      } catch (e) {
        if (!(e instanceof CheckpointError)) throw new Error(`case ${i}: ${String(e)} is not a CheckpointError`, { cause: e });
        expect(e.message.startsWith('fuzz.safetensors: ')).toBe(true);
        outcomes.refused++;
        continue;
      }
      checkConsistent(header, bytes.byteLength);
      outcomes.parsed++;
    }
    // Both outcomes must actually occur, or the mutations are not testing anything.
    expect(outcomes.parsed).toBeGreaterThan(100);
    expect(outcomes.refused).toBeGreaterThan(1000);
    console.log(`[fuzz] ${JSON.stringify(outcomes)} in ${(performance.now() - start).toFixed(0)} ms`);
  });
});
