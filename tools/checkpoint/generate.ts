// Small random DeepSeek-V3 checkpoints in the exact released layout (src/model/MATH.md 2.1):
// config.json plus one model.safetensors, or N shards with model.safetensors.index.json.
// The tensor set comes from src/model/weights.ts, so a generated checkpoint always has exactly
// the tensors the engine expects. Files are returned as bytes; write.ts puts them on disk, and
// stream.ts writes the same files at real sizes, 128 rows at a time (`tensorBands`).
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
import { BLOCK } from '../../src/gpu/kernel.ts';
import { expectedTensors, type ExpectedTensor } from '../../src/model/weights.ts';
import { INDEX_FILE, planCheckpoint, plannedTensors, type GeneratedDtype, type PlannedTensor } from './layout.ts';
import { bf16Bytes, f32Bytes, fp8Quantize } from './tensor_data.ts';

export type { GeneratedDtype } from './layout.ts';

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
  /** Instead of `shards`: files of at most this many bytes of tensors (layout.ts `sizeCuts`). */
  readonly maxShardBytes?: number;
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
  const maxBytes = options.maxBytes ?? 2 ** 30;
  checkSize(parseConfig(options.config, 'the generator config'), maxBytes); // before planning a 671B layout
  const { shards, maxShardBytes } = options;
  const layout = planCheckpoint(options.config, shards === undefined && maxShardBytes !== undefined ? { maxShardBytes } : { shards: shards ?? 1 });
  const tensors = generateTensors(layout.config, options.seed ?? 0, maxBytes);
  const byName = new Map(tensors.map((t) => [t.name, t]));

  const files = new Map<string, Uint8Array>();
  files.set('config.json', layout.configJson);
  for (const file of layout.files) {
    const entries = file.tensors.map((p) => [p.name, { dtype: p.dtype, shape: p.shape, data: byName.get(p.name)!.data }]);
    files.set(file.name, writeSafetensors(Object.fromEntries(entries), { format: 'pt' }));
  }
  if (layout.index) files.set(INDEX_FILE, layout.index);
  return { files, tensors };
}

/** Every expected tensor with random contents, in module order (each FP8 weight then its scales). */
export function generateTensors(config: DeepseekV3Config, seed: number, maxBytes = 2 ** 30): GeneratedTensor[] {
  const planned = checkSize(config, maxBytes);

  const byName = new Map(planned.map((t) => [t.name, t]));
  const expected = expectedTensors(config);
  const out: GeneratedTensor[] = [];
  for (const t of planned) {
    if (t.scaleOf) continue; // written with its weight
    const data = new Uint8Array(t.byteLength);
    const scale = t.scaleInv ? byName.get(t.scaleInv)! : undefined;
    const scaleData = scale ? new Uint8Array(scale.byteLength) : undefined;
    const rowBytes = t.byteLength / t.rows;
    for (const band of tensorBands(config, seed, t.name, expected)) {
      data.set(band.data, band.row * rowBytes);
      if (band.scaleInv) scaleData!.set(band.scaleInv, (band.row / BLOCK) * band.scaleInv.byteLength);
    }
    out.push({ name: t.name, dtype: t.dtype, shape: t.shape, data });
    if (scale) out.push({ name: scale.name, dtype: scale.dtype, shape: scale.shape, data: scaleData! });
  }
  return out;
}

/** The planned tensors, or an ArgumentError when they are over `maxBytes` together. */
function checkSize(config: DeepseekV3Config, maxBytes: number): PlannedTensor[] {
  const planned = plannedTensors(config);
  const bytes = planned.reduce((sum, t) => sum + t.byteLength, 0);
  if (bytes > maxBytes) throw new ArgumentError(`the config needs ${bytes} bytes of tensors, over the generator's limit of ${maxBytes}: write it with stream.ts`);
  return planned;
}

/**
 * Rows [row, row + its rows) of one tensor's release bytes; for an FP8 weight also that 128-row
 * block's row of F32 block scales (`scaleInv`, the bytes of `ceil(in/128)` floats).
 */
export interface TensorBand {
  readonly row: number;
  readonly data: Uint8Array;
  readonly scaleInv?: Uint8Array;
}

/**
 * One tensor's bytes, 128 rows at a time, the same bytes generateTensors holds whole. Every value
 * comes from the tensor's own mulberry32 stream, which is a counter: the k-th draw is the first of
 * `rng(seed + k * step)`, so a band starts its stream where the whole tensor's would be (randn
 * takes two draws per value; the block factors follow all the values).
 */
export function* tensorBands(
  config: DeepseekV3Config,
  seed: number,
  name: string,
  expected: ReadonlyMap<string, ExpectedTensor> = expectedTensors(config),
): Generator<TensorBand> {
  const source = mtpCopySource(config, name) ?? name; // the MTP copies are the main tensors' bytes
  const spec = expected.get(source);
  if (!spec || spec.kind === 'scale_inv') throw new ArgumentError(`generator: ${name} is not a tensor the generator writes (scales come with their weight)`);
  const s = tensorSeed(seed, source);

  if (spec.shape.length === 1) {
    yield { row: 0, data: vector(spec, source, rng(s)) };
    return;
  }
  const [rows, cols] = spec.shape;
  const colBlocks = Math.ceil(cols / BLOCK);
  const std = standardDeviation(spec, source, config);
  const edgeTarget = spec.dtype === 'fp8' && name === edgeCodeTarget(expected) && cols >= EDGE_CODES.length;
  for (let r0 = 0; r0 < rows; r0 += BLOCK) {
    const bandRows = Math.min(BLOCK, rows - r0);
    const w = randn(rngAt(s, 2 * r0 * cols), bandRows * cols, std);
    if (!spec.blockScaled) {
      yield { row: r0, data: bf16Bytes(w) };
      continue;
    }
    // Each 128x128 block times a factor in [0.5, 2], so the block scales differ.
    const factor = rngAt(s, 2 * rows * cols + (r0 / BLOCK) * colBlocks);
    for (let c0 = 0; c0 < cols; c0 += BLOCK) {
      const f = 2 ** (factor() * 2 - 1);
      for (let r = 0; r < bandRows; r++) for (let c = c0; c < Math.min(c0 + BLOCK, cols); c++) w[r * cols + c] *= f;
    }
    if (spec.dtype !== 'fp8') {
      yield { row: r0, data: bf16Bytes(w) }; // a release without quantization_config
      continue;
    }
    const { codes, scaleInv } = fp8Quantize(w, bandRows, cols); // bit for bit the engine's reference quantizeFp8
    if (r0 === 0 && edgeTarget) codes.set(EDGE_CODES, 0);
    yield { row: r0, data: codes, scaleInv: f32Bytes(scaleInv) };
  }
}

/** mulberry32 after `draws` draws: its state only ever adds a constant (src/testing/random.ts). */
function rngAt(seed: number, draws: number): () => number {
  return rng((seed + Math.imul(draws, 0x6d2b79f5)) >>> 0);
}

/** The first query projection of layer 0, which holds EDGE_CODES. */
function edgeCodeTarget(expected: ReadonlyMap<string, ExpectedTensor>): string | undefined {
  return [...expected.keys()].find((n) => /^model\.layers\.0\.self_attn\.(q_a_proj|q_proj)\.weight$/.test(n));
}

/** The Gaussian scale of a matrix's values. */
function standardDeviation(spec: ExpectedTensor, name: string, config: DeepseekV3Config): number {
  const d = config.hidden_size;
  if (spec.blockScaled) {
    // Outputs into the residual stream scaled down by the depth.
    const residualScale = 1 / Math.sqrt(2 * (config.num_hidden_layers + 1));
    return (1 / Math.sqrt(spec.shape[1])) * (/(o_proj|down_proj)\.weight$/.test(name) ? residualScale : 1);
  }
  switch (spec.kind) {
    case 'embedding':
      return 1;
    case 'head':
      return 1 / Math.sqrt(d);
    case 'router':
      // x is RMS-normalised (|x|^2 ~ d), so logits x.w are about N(0, 1.5^2).
      return 1.5 / Math.sqrt(d);
    case 'linear': // eh_proj, the one BF16 Linear: [d, 2d]
      return 1 / Math.sqrt(spec.shape[1]);
    default:
      throw new Error(`generator: no initialiser for the matrix ${name} (${spec.kind})`);
  }
}

/** Values of a vector (norm weights, the router's correction bias), as bytes of its release dtype. */
function vector(spec: ExpectedTensor, name: string, next: () => number): Uint8Array {
  const n = elements(spec.shape);
  switch (spec.kind) {
    case 'norm': {
      const v = randn(next, n, 0.1);
      for (let i = 0; i < n; i++) v[i] += 1;
      return bf16Bytes(v);
    }
    case 'router_bias': {
      const v = new Float32Array(n);
      for (let i = 0; i < n; i++) v[i] = (next() * 2 - 1) * 0.12;
      return f32Bytes(v);
    }
    default:
      throw new Error(`generator: no initialiser for the vector ${name} (${spec.kind})`);
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

/** A per-tensor seed, so each tensor's values depend only on the seed and its name. */
function tensorSeed(seed: number, name: string): number {
  let h = 0x811c9dc5 ^ (seed >>> 0); // FNV-1a over the name, started from the seed
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

function elements(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}
