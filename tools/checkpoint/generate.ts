// Small random DeepSeek-V3 checkpoints in the exact released layout (src/model/MATH.md 2.1):
// config.json plus one model.safetensors, or N shards with model.safetensors.index.json.
// The tensor set comes from src/model/weights.ts, so a generated checkpoint always has exactly
// the tensors the engine expects. Files are returned as bytes; write.ts puts them on disk.
// Random numbers: the seeded mulberry32 + Box-Muller of src/gpu/testing.ts.
//
// Conditioning, as for fixtures/dsv3-tiny-official: Linear weights Gaussian with variance
// 1/fan_in (outputs into the residual stream scaled down by the depth), each 128x128 block scaled by
// a random factor before quantisation so the block scales differ; norms 1 + 0.1 N(0,1); router
// logits about N(0, 1.5^2); e_score_correction_bias uniform in +-0.12; the MTP layer's
// embed_tokens and shared_head.head byte copies of the main ones, as in the release.

import { parseConfig, type DeepseekV3Config } from '../../src/config.ts';
import { ArgumentError } from '../../src/errors.ts';
import { writeSafetensors } from '../../src/io/safetensors_write.ts';
import { rng, randn } from '../../src/gpu/testing.ts';
import { expectedTensors, scaleInvName, type ExpectedTensor } from '../../src/model/weights.ts';
import { quantizeFp8 } from '../../src/kernels/quantize_fp8.ref.ts';
import { bf16Bytes, f32Bytes } from './tensor_data.ts';

export type GeneratedDtype = 'F8_E4M3' | 'BF16' | 'F32' | 'F16';

export interface GeneratedTensor {
  readonly name: string;
  readonly dtype: GeneratedDtype;
  readonly shape: readonly number[];
  /** Raw little-endian bytes. */
  readonly data: Uint8Array;
}

export interface GenerateOptions {
  /** config.json contents (Hugging Face keys); validated by parseConfig and written as given. */
  readonly config: Record<string, unknown>;
  readonly seed?: number;
  /** 1 (default): model.safetensors; N > 1: model-0000k-of-0000N.safetensors + index. */
  readonly shards?: number;
  /** Refuse configs whose tensors exceed this many bytes (default 1 GiB): a guard against real sizes. */
  readonly maxBytes?: number;
}

export interface GeneratedCheckpoint {
  /** file name -> bytes: config.json, the safetensors file(s), the index when sharded. */
  readonly files: Map<string, Uint8Array>;
  readonly tensors: readonly GeneratedTensor[];
}

/**
 * Edge e4m3 codes placed in row 0, columns 0-7 of layer 0's first query projection, as in the
 * fixture: +0, -0, +-2^-9 (smallest subnormals), 7*2^-9 (largest subnormal), 2^-6 (smallest
 * normal), 448, -448.
 */
export const EDGE_CODES = [0x00, 0x80, 0x01, 0x81, 0x07, 0x08, 0x7e, 0xfe] as const;

export function generateCheckpoint(options: GenerateOptions): GeneratedCheckpoint {
  const config = parseConfig(options.config, 'the generator config');
  const shards = options.shards ?? 1;
  if (!Number.isInteger(shards) || shards < 1) throw new ArgumentError(`shards must be a positive integer, got ${shards}`);
  const count = expectedTensors(config).size;
  if (shards > count) throw new ArgumentError(`${shards} shards for ${count} tensors: at most one shard per tensor`);
  const tensors = generateTensors(config, options.seed ?? 0, options.maxBytes ?? 2 ** 30);

  const files = new Map<string, Uint8Array>();
  files.set('config.json', new TextEncoder().encode(JSON.stringify(options.config, null, 2) + '\n'));
  if (shards === 1) {
    files.set('model.safetensors', serialize(tensors));
    return { files, tensors };
  }
  const weightMap: Record<string, string> = {};
  const cuts = [0, ...shardCuts(tensors, shards), tensors.length];
  for (let k = 0; k < shards; k++) {
    const file = `model-${pad5(k + 1)}-of-${pad5(shards)}.safetensors`;
    const part = tensors.slice(cuts[k], cuts[k + 1]);
    for (const t of part) weightMap[t.name] = file;
    files.set(file, serialize(part));
  }
  const sortedMap = Object.fromEntries(Object.keys(weightMap).sort().map((name) => [name, weightMap[name]]));
  const totalSize = tensors.reduce((sum, t) => sum + t.data.byteLength, 0);
  const index = { metadata: { total_size: totalSize }, weight_map: sortedMap };
  files.set('model.safetensors.index.json', new TextEncoder().encode(JSON.stringify(index, null, 2) + '\n'));
  return { files, tensors };
}

/** Every expected tensor with random contents, in module order (each FP8 weight then its scales). */
export function generateTensors(config: DeepseekV3Config, seed: number, maxBytes = 2 ** 30): GeneratedTensor[] {
  const expected = expectedTensors(config);
  let bytes = 0;
  for (const t of expected.values()) bytes += elements(t.shape) * (t.dtype === 'fp8' ? 1 : t.dtype === 'f32' ? 4 : 2);
  if (bytes > maxBytes) throw new ArgumentError(`the config needs ${bytes} bytes of tensors, over the generator's limit of ${maxBytes}`);

  const residualScale = 1 / Math.sqrt(2 * (config.num_hidden_layers + 1));
  const edgeTarget = [...expected.keys()].find((n) => /^model\.layers\.0\.self_attn\.(q_a_proj|q_proj)\.weight$/.test(n));
  const made = new Map<string, GeneratedTensor>();
  const out: GeneratedTensor[] = [];
  const push = (t: GeneratedTensor) => {
    made.set(t.name, t);
    out.push(t);
  };

  for (const [name, spec] of expected) {
    if (spec.kind === 'scale_inv') continue; // written with its weight
    const next = rng(tensorSeed(seed, name));
    const n = elements(spec.shape);
    const copyOf = mtpCopySource(config, name);
    if (copyOf) {
      push({ ...made.get(copyOf)!, name });
    } else if (spec.blockScaled) {
      const [rows, cols] = spec.shape;
      const std = (1 / Math.sqrt(cols)) * (/(o_proj|down_proj)\.weight$/.test(name) ? residualScale : 1);
      const w = randn(next, n, std);
      scaleBlocks(w, rows, cols, next);
      if (spec.dtype !== 'fp8') {
        push({ name, dtype: 'BF16', shape: spec.shape, data: bf16Bytes(w) }); // a release without quantization_config
        continue;
      }
      const { codes, scaleInv } = quantizeFp8(w, rows, cols);
      if (name === edgeTarget && cols >= EDGE_CODES.length) codes.set(EDGE_CODES, 0);
      push({ name, dtype: 'F8_E4M3', shape: spec.shape, data: codes });
      const scaleName = scaleInvName(name);
      push({ name: scaleName, dtype: 'F32', shape: expected.get(scaleName)!.shape, data: f32Bytes(scaleInv) });
    } else {
      push({ name, dtype: spec.dtype === 'f32' ? 'F32' : 'BF16', shape: spec.shape, data: initial(spec, name, n, next, config) });
    }
  }
  return out;
}

/** Values of a non-FP8 tensor, as bytes of its release dtype. */
function initial(spec: ExpectedTensor, name: string, n: number, next: () => number, config: DeepseekV3Config): Uint8Array {
  const d = config.hidden_size;
  switch (spec.kind) {
    case 'norm': {
      const v = randn(next, n, 0.1);
      for (let i = 0; i < n; i++) v[i] += 1;
      return bf16Bytes(v);
    }
    case 'embedding':
      return bf16Bytes(randn(next, n, 1));
    case 'head':
      return bf16Bytes(randn(next, n, 1 / Math.sqrt(d)));
    case 'router':
      // x is RMS-normalised (|x|^2 ~ d), so logits x.w are about N(0, 1.5^2).
      return bf16Bytes(randn(next, n, 1.5 / Math.sqrt(d)));
    case 'router_bias': {
      const v = new Float32Array(n);
      for (let i = 0; i < n; i++) v[i] = (next() * 2 - 1) * 0.12;
      return f32Bytes(v);
    }
    case 'linear': // eh_proj, the one BF16 Linear: [d, 2d]
      return bf16Bytes(randn(next, n, 1 / Math.sqrt(spec.shape[1])));
    case 'scale_inv':
      break;
  }
  throw new Error(`generator: no initialiser for ${name} (${spec.kind})`);
}

/** Multiply each 128x128 block by a factor in [0.5, 2] so the block scales differ. */
function scaleBlocks(w: Float32Array, rows: number, cols: number, next: () => number): void {
  for (let r0 = 0; r0 < rows; r0 += 128) {
    for (let c0 = 0; c0 < cols; c0 += 128) {
      const f = 2 ** (next() * 2 - 1);
      for (let r = r0; r < Math.min(r0 + 128, rows); r++) for (let c = c0; c < Math.min(c0 + 128, cols); c++) w[r * cols + c] *= f;
    }
  }
}

/** The MTP layer's embedding and head are copies of the main ones in the release. */
function mtpCopySource(config: DeepseekV3Config, name: string): string | null {
  if (config.mtp_layer_index === null) return null;
  const p = `model.layers.${config.mtp_layer_index}.`;
  if (name === `${p}embed_tokens.weight`) return 'model.embed_tokens.weight';
  if (name === `${p}shared_head.head.weight`) return 'lm_head.weight';
  return null;
}

/**
 * Shard boundaries (indices into `tensors`, module order), each near an equal share of the bytes.
 * A cut is moved forward to the next place that separates an FP8 weight from its scale_inv, so a
 * loader must use weight_map rather than assume a weight and its scales share a file.
 */
export function shardCuts(tensors: readonly GeneratedTensor[], shards: number): number[] {
  const before = [0];
  for (const t of tensors) before.push(before[before.length - 1] + t.data.byteLength);
  const total = before[tensors.length];
  const splitsPair = (i: number) => tensors[i].name === scaleInvName(tensors[i - 1].name);
  const cuts: number[] = [];
  let prev = 0;
  for (let k = 1; k < shards; k++) {
    const last = tensors.length - (shards - k); // leave one tensor at least for each later shard
    let cut = prev + 1;
    while (cut < last && before[cut] < (total * k) / shards) cut++;
    let pair = cut;
    while (pair < last && !splitsPair(pair)) pair++;
    if (splitsPair(pair)) cut = pair;
    cuts.push(cut);
    prev = cut;
  }
  return cuts;
}

/** One safetensors file; F32 first, then 2-byte, then 1-byte dtypes, so every tensor is aligned to its element size. */
function serialize(tensors: readonly GeneratedTensor[]): Uint8Array {
  const size = (t: GeneratedTensor) => (t.dtype === 'F32' ? 4 : t.dtype === 'F8_E4M3' ? 1 : 2);
  const ordered = [...tensors].sort((a, b) => size(b) - size(a)); // stable: module order within a size
  return writeSafetensors(Object.fromEntries(ordered.map((t) => [t.name, { dtype: t.dtype, shape: t.shape, data: t.data }])), { format: 'pt' });
}

/** A per-tensor seed, so each tensor's values depend only on the seed and its name. */
function tensorSeed(seed: number, name: string): number {
  let h = 0x811c9dc5 ^ (seed >>> 0); // FNV-1a over the name, started from the seed
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

function elements(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function pad5(n: number): string {
  return String(n).padStart(5, '0');
}
