// The ONNX peer's weights, built at run time from the checkpoint webmoe loads: tools/peer/export_onnx.py
// leaves every weight out of decoder.onnx as external data, and its manifest.json says what fills
// each initializer: its checkpoint tensors dequantised to float32 as the engine's CPU reference and
// tools/train/fp8.py read them (F8_E4M3 code value * weight_scale_inv of its 128x128 block, the
// product rounded to float32; BF16 << 16; F32 as stored), each transposed when `transpose` (the
// graph's MatMuls take [in, out]), concatenated (a stack of experts). Each safetensors file is read
// once, whole: this is for the small shipped checkpoint.

import { CheckpointError } from '../../errors.ts';
import type { Checkpoint } from '../../io/checkpoint_files.ts';
import type { TensorInfo } from '../../io/safetensors.ts';
import { E4M3_VALUES } from '../../kernels/fp8_e4m3.ref.ts';

export interface PeerInitializer {
  name: string;
  /** Byte offset in the external file, and length. */
  offset: number;
  bytes: number;
  shape: number[];
  sources: string[];
  transpose: boolean;
}

export interface PeerManifest {
  format: 'webmoe-onnx-peer/1';
  checkpoint: string;
  /** The external file's name as the graph refers to it, and its size. */
  location: string;
  bytes: number;
  inputs: string[];
  outputs: string[];
  cache: { heads: number; key_dim: number; value_dim: number; layers: number };
  vocab_size: number;
  initializers: PeerInitializer[];
}

const REEXPORT = 'the ONNX graph was exported from another checkpoint: run /usr/bin/python3 tools/peer/export_onnx.py (tools/peer/README.md)';

export function checkPeerManifest(json: unknown, where: string): PeerManifest {
  const m = json as PeerManifest;
  if (m?.format !== 'webmoe-onnx-peer/1' || !Array.isArray(m.initializers)) throw new CheckpointError(`not a webmoe-onnx-peer/1 manifest`, where);
  return m;
}

/**
 * The external data of decoder.onnx: one buffer of `manifest.bytes`, each initializer at its offset.
 * A checkpoint tensor missing or shaped otherwise than the graph expects is a CheckpointError that
 * says to export again.
 */
export async function peerExternalData(manifest: PeerManifest, checkpoint: Checkpoint, signal?: AbortSignal): Promise<Uint8Array<ArrayBuffer>> {
  const files = new Map<string, Uint8Array>();
  const bytesOf = async (info: TensorInfo) => {
    let file = files.get(info.file);
    if (!file) {
      const source = checkpoint.sources.get(info.file)!;
      files.set(info.file, (file = await source.read(0, await source.size(), signal)));
    }
    return file.subarray(info.byteOffset, info.byteOffset + info.byteLength);
  };
  const out = new Uint8Array(manifest.bytes);
  for (const init of manifest.initializers) {
    const size = init.shape.reduce((a, b) => a * b, 1);
    if (init.bytes !== 4 * size || init.offset + init.bytes > manifest.bytes || init.offset % 4 !== 0) {
      throw new CheckpointError(`initializer ${init.name}: ${init.bytes} bytes at ${init.offset} do not hold float32 ${JSON.stringify(init.shape)}`, 'manifest.json');
    }
    const target = new Float32Array(out.buffer, init.offset, size);
    let at = 0;
    for (const source of init.sources) {
      const info = checkpoint.tensors.get(source);
      if (!info) throw new CheckpointError(`tensor ${source} (for ${init.name}) is not in the checkpoint: ${REEXPORT}`);
      // A source is one slice of the initializer: its own shape, or its transpose.
      const want = init.shape.slice(init.sources.length > 1 ? 1 : 0);
      const got = init.transpose ? [...info.shape].reverse() : [...info.shape];
      if (got.join('x') !== want.join('x')) throw new CheckpointError(`tensor ${source} is ${info.shape.join('x')}, the graph's ${init.name} needs ${want.join('x')}${init.transpose ? ' transposed' : ''}: ${REEXPORT}`);
      const scale = info.dtype === 'F8_E4M3' ? checkpoint.tensors.get(`${source}_scale_inv`) : undefined;
      if (info.dtype === 'F8_E4M3' && !scale) throw new CheckpointError(`tensor ${source} is F8_E4M3 but ${source}_scale_inv is missing`);
      const values = dequantise(info, await bytesOf(info), scale && (await bytesOf(scale)));
      if (init.transpose) transposeInto(target, at, values, info.shape[0], info.shape[1]);
      else target.set(values, at);
      at += values.length;
    }
    if (at !== size) throw new CheckpointError(`initializer ${init.name}: its sources hold ${at} values, the graph needs ${size}: ${REEXPORT}`);
  }
  return out;
}

/** One tensor's float32 values (row-major). `scaleBytes`: the F32 weight_scale_inv of an F8_E4M3 tensor. */
function dequantise(info: TensorInfo, bytes: Uint8Array, scaleBytes?: Uint8Array): Float32Array {
  const n = info.byteLength / ({ F8_E4M3: 1, BF16: 2, F32: 4 } as Record<string, number>)[info.dtype];
  if (info.dtype === 'F32') return new Float32Array(bytes.slice().buffer); // copied: the file offset need not be 4-aligned
  if (info.dtype === 'BF16') {
    const bits = new Uint16Array(bytes.slice().buffer);
    const out = new Uint32Array(n);
    for (let i = 0; i < n; i++) out[i] = bits[i] << 16;
    return new Float32Array(out.buffer);
  }
  if (info.dtype === 'F8_E4M3' && scaleBytes && info.shape.length === 2) {
    const [rows, cols] = info.shape;
    const scale = new Float32Array(scaleBytes.slice().buffer);
    const blockCols = Math.ceil(cols / 128);
    const out = new Float32Array(n);
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) out[r * cols + c] = E4M3_VALUES[bytes[r * cols + c]] * scale[(r >> 7) * blockCols + (c >> 7)];
    }
    return out;
  }
  throw new CheckpointError(`tensor ${info.name} is ${info.dtype} ${info.shape.join('x')}, which the ONNX peer cannot read`, info.file);
}

/** out[at + c * rows + r] = values[r * cols + c]: a [rows, cols] matrix written as [cols, rows]. */
function transposeInto(out: Float32Array, at: number, values: Float32Array, rows: number, cols: number): void {
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[at + c * rows + r] = values[r * cols + c];
}
