// The head of a forward plan: logits = head(hidden rows), then on the GPU the repetition penalty
// and sampling, so that a step reads back ids only. Shared by the main model (lm_head) and the
// MTP module (shared_head.head).

import type { DeepseekV3Config } from '../config.ts';
import { ArgumentError } from '../errors.ts';
import { markPresent, maskWords, presenceMask, type PreparedRepetitionPenalty } from '../kernels/repetition_penalty.ts';
import { tokenMaskWords, type PreparedSample, type SamplingParams } from '../kernels/sample.ts';
import type { LinearWeight } from './gpu_weights.ts';
import type { ModelKernels } from './model_kernels.ts';

/** Which rows of a step get logits: the last one (generation) or every one (scoring, MTP verify). */
export type LogitRows = 'last' | 'all';

/** The ids a sequence holds so far (prompt and output), as the repetition penalty reads them on the GPU. */
export class SeenTokens {
  /** [ceil(vocab / 32)] u32 presence bits, uploaded before each sampling step. */
  readonly mask: Uint32Array<ArrayBuffer>;
  private readonly vocab: number;

  constructor(vocab: number, ids: Iterable<number> = []) {
    this.vocab = vocab;
    this.mask = presenceMask(vocab, ids);
  }

  add(id: number): void {
    markPresent(this.mask, this.vocab, id);
  }
}

export interface RepetitionInput {
  /** HF convention: positive logits divided by it, negative ones multiplied; 1 is off. */
  penalty: number;
  seen: SeenTokens;
}

export interface HeadPlan {
  /** Rows that get logits: `rows` for 'all', 1 for 'last'. */
  readonly outRows: number;
  /** Logits per row: HeadOptions.vocab. */
  readonly vocab: number;
  /** [outRows, vocab_size] f32 logits, written by every encode. */
  readonly logits: GPUBuffer;
  /** [outRows] u32 ids, written by an encode that samples. */
  readonly sampledIds: GPUBuffer;
  /** Records the head (and, when asked, the penalty and the sampling) into `encoder`. */
  encode(encoder: GPUCommandEncoder, options: { sample?: SamplingParams; repetition?: RepetitionInput; tokenMask?: Uint32Array<ArrayBuffer> }): void;
  destroy(): void;
}

export interface HeadOptions {
  kernels: ModelKernels;
  config: DeepseekV3Config;
  /** lm_head, or the MTP module's shared_head.head. */
  weight: LinearWeight;
  /** [rows, hidden_size] f32: the final norm's output; with `norm`, the residual stream h before it. */
  hidden: GPUBuffer;
  /**
   * The final norm (model.norm, shared_head.norm) done by the head (decode plans): in the GEMV's
   * prologue where every row gets logits, else as an RMSNorm dispatch first; `xNormed` [rows,
   * hidden_size] receives the normed rows (the MTP module reads the main model's).
   */
  norm?: { weight: GPUBuffer; eps: number; xNormed?: GPUBuffer };
  rows: number;
  logitRows: LogitRows;
  label: string;
  /**
   * Logits for ids 0 .. vocab - 1 only (default: the whole vocab_size): the MTP draft head over
   * the most frequent ids (byte-level BPE numbers its tokens in the order it merged them, the
   * frequent ones first), which reads that share of the head's weights.
   */
  vocab?: number;
}

export function prepareHead({ kernels: k, config: c, weight: whole, hidden: input, rows, logitRows, label, vocab, norm }: HeadOptions): HeadPlan {
  const { device } = k.gpu;
  const d = c.hidden_size;
  const V = vocab ?? c.vocab_size;
  if (!(Number.isInteger(V) && V >= 1 && V <= whole.out)) throw new ArgumentError(`${label}: vocab must be an integer in [1, ${whole.out}], got ${V}`);
  const weight = firstRows(whole, V);
  const outRows = logitRows === 'all' ? rows : 1;
  const owned: { destroy(): void }[] = [];
  const keep = <P extends { destroy(): void }>(p: P): P => (owned.push(p), p);
  const buffer = (name: string, size: number, usage: number) => keep(device.createBuffer({ label: `${label}.${name}`, size: Math.max(16, size), usage }));
  try {
    // The norm in the GEMV where every row gets logits; else a dispatch of its own first.
    const inGemv = norm !== undefined && outRows === rows;
    const hidden = norm && !inGemv ? (norm.xNormed ?? buffer('hidden', 4 * rows * d, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC)) : input;
    const normCall = norm && !inGemv ? keep(k.rmsnorm.prepare({ rows, width: d, eps: norm.eps, x: input, weight: norm.weight, y: hidden, label: `${label}.norm` })) : undefined;
    // The last row alone is copied out, so the GEMV binds it at offset 0.
    const lastHidden = outRows < rows ? buffer('hidden.last', 4 * d, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST) : undefined;
    const logits = buffer('logits', 4 * outRows * V, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC);
    const sampledIds = buffer('sampled_ids', 4 * outRows, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC);
    const head = keep(k.linear.prepare(weight, { M: outRows, x: lastHidden ?? hidden, y: logits, norm: inGemv ? norm : undefined, label }));
    // Made on the first step that needs them.
    let penalty: PreparedRepetitionPenalty | undefined;
    let penaltyMask: GPUBuffer | undefined;
    let sample: PreparedSample | undefined;
    // Grammar-constrained sampling: [outRows, ceil(vocab / 32)] u32 allowed-token bits, and the
    // sampler's masked variant reading them (made on the first step with a mask).
    let tokenMaskBuffer: GPUBuffer | undefined;
    let maskedSample: PreparedSample | undefined;

    return {
      outRows,
      vocab: V,
      logits,
      sampledIds,
      encode(encoder, { sample: sampling, repetition, tokenMask }) {
        if (normCall) {
          const first = encoder.beginComputePass({ label: `${label}.norm` });
          normCall.encode(first);
          first.end();
        }
        if (lastHidden) encoder.copyBufferToBuffer(hidden, 4 * (rows - 1) * d, lastHidden, 0, 4 * d);
        const pass = encoder.beginComputePass({ label });
        head.encode(pass);
        if (sampling && repetition && repetition.penalty !== 1) {
          penaltyMask ??= buffer('repetition_mask', 4 * maskWords(V), GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST);
          penalty ??= keep(k.repetitionPenalty.prepare({ rows: outRows, vocab: V, logits, mask: penaltyMask, penalty: repetition.penalty, label: `${label}.repetition_penalty` }));
          penalty.setPenalty(repetition.penalty);
          device.queue.writeBuffer(penaltyMask, 0, repetition.seen.mask);
          penalty.encode(pass);
        }
        if (sampling && tokenMask) {
          const words = tokenMaskWords(V);
          if (tokenMask.length !== outRows * words) throw new ArgumentError(`${label}: the token mask has ${tokenMask.length} words; ${outRows} rows of vocab ${V} need ${outRows * words}`);
          tokenMaskBuffer ??= buffer('token_mask', 4 * outRows * words, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST);
          maskedSample ??= keep(k.sample.prepare({ rows: outRows, vocab: V, logits, ids: sampledIds, sampling, tokenMask: tokenMaskBuffer, label: `${label}.sample_masked` }));
          device.queue.writeBuffer(tokenMaskBuffer, 0, tokenMask);
          maskedSample.setSampling(sampling);
          maskedSample.encode(pass);
        } else if (sampling) {
          sample ??= keep(k.sample.prepare({ rows: outRows, vocab: V, logits, ids: sampledIds, sampling, label: `${label}.sample` }));
          sample.setSampling(sampling);
          sample.encode(pass);
        }
        pass.end();
      },
      destroy() {
        for (const p of owned.splice(0)) p.destroy();
      },
    };
  } catch (err) {
    for (const p of owned.splice(0)) p.destroy();
    throw err;
  }
}

/** The Linear's first `n` output rows: its pieces clipped (a GEMV over them reads nothing past row n). */
function firstRows(w: LinearWeight, n: number): LinearWeight {
  if (n === w.out) return w;
  const pieces = w.pieces.filter((p) => p.firstRow < n).map((p) => ({ ...p, rows: Math.min(p.rows, n - p.firstRow) }));
  return { ...w, pieces, out: n };
}
