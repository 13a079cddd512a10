// Sampling kernel wrapper: pipeline, bind group, params, dispatch, bytes/FLOPs. Shader:
// shaders/sample.wgsl; reference: sample.ref.ts. Turns the head's logits [rows, vocab] into token
// ids [rows] on the GPU (rows: the decode step, or the MTP verify step), so that only ids are
// read back. The sampling settings change per call through `setSampling` (one small uniform write).
// A call given a `tokenMask` (grammar-constrained decoding) uses the shader's `mask: 'on'` variant,
// which reads a refused token's logit as -inf; a call without one uses the variant that reads no mask.
// A call given `probs` (speculative decoding with sampled drafts) also writes each row's kept
// distribution, the p and q of the acceptance rule (speculative_accept.ts).

import shaderSource from '../../shaders/sample.wgsl?raw';
import { ArgumentError } from '../errors.ts';
import { checkBindings, checkCounts, checkU32Indices, kernelPipeline, singleDispatch, Uniforms, type Cost, type Kernel, type KernelContext, type PreparedCall } from '../gpu/kernel.ts';
import type { SamplingParams } from './sample.ref.ts';

export type { SamplingParams } from './sample.ref.ts';

export interface SampleOptions {
  /** Fewer invocations per row and serial reductions, so fewer barriers (CPU adapters). Default: the adapter's isSoftware. */
  software?: boolean;
}

export interface Sample extends Kernel<SampleArgs, PreparedSample> {
  readonly software: boolean;
  /** Invocations per workgroup; one workgroup per row. */
  readonly workgroupSize: number;
  /** Bits of the top-k/top-p cut found per pass. */
  readonly radixBits: number;
}

// Workgroup memory of the histograms: workgroupSize * 2^radixBits * 8 bytes (8 KiB, 2 KiB).
// On SwiftShader the cost grows with the invocations per workgroup far more than with the work:
// 16 run 4000 small rows 5x faster than 64, and a 129280-wide row as fast.
/** The shader's variant axes: whether a token mask is read, whether the kept distribution is written. */
const SAMPLE_AXES = { mask: ['off', 'on'], probs: ['off', 'on'] } as const;

const GPU_TUNING = { workgroupSize: 256, radixBits: 2 };
const SOFTWARE_TUNING = { workgroupSize: 16, radixBits: 4 };

/** Passes over a row the kernel makes (at most: the tie pass is skipped without ties). */
export function samplePasses(vocab: number, p: SamplingParams, radixBits: number): number {
  if (p.temperature <= 0) return 1;
  const search = 32 / radixBits;
  let passes = 2;
  if (p.topK > 0 && p.topK < vocab) passes += search + 3;
  if (p.topP < 1) passes += search + 3;
  return passes;
}

export interface SampleShape {
  rows: number;
  vocab: number;
  sampling: SamplingParams;
  /** Sample.radixBits. */
  radixBits: number;
  /** A token mask is read (once per pass, with the logits). */
  masked?: boolean;
  /** The kept distribution is written (two more passes: its total, then the row of probs). */
  withProbs?: boolean;
}

/**
 * Bytes and FLOPs for the benchmark: every pass reads the row's logits; ~4 FLOPs per element
 * per sampling pass (subtract, divide, exp, add), 1 for the argmax pass; the ids written.
 */
export function sampleCost({ rows, vocab, sampling, radixBits, masked = false, withProbs = false }: SampleShape): Cost {
  const extra = withProbs && sampling.temperature > 0 ? 2 : 0;
  const passes = samplePasses(vocab, sampling, radixBits) + extra;
  return {
    bytes: 4 * rows * vocab * passes + 4 * rows + (masked ? 4 * rows * tokenMaskWords(vocab) * passes : 0) + (withProbs ? 4 * rows * vocab : 0),
    flops: rows * vocab * (1 + 4 * (passes - 1)),
  };
}

/** Throws an ArgumentError naming the first bad setting. */
export function checkSamplingParams(p: SamplingParams): void {
  const u32 = (v: number) => Number.isInteger(v) && v >= 0 && v <= 0xffffffff;
  if (!(Number.isFinite(p.temperature) && p.temperature >= 0)) {
    throw new ArgumentError(`sampling: temperature must be a finite number >= 0, got ${p.temperature}`);
  }
  if (!u32(p.topK)) throw new ArgumentError(`sampling: top_k must be an integer >= 0 (0: off), got ${p.topK}`);
  if (!(p.topP >= 0 && p.topP <= 1)) throw new ArgumentError(`sampling: top_p must be in [0, 1] (1: off), got ${p.topP}`);
  if (!u32(p.seed)) throw new ArgumentError(`sampling: seed must be a u32 integer, got ${p.seed}`);
  if (!u32(p.step)) throw new ArgumentError(`sampling: step must be a u32 integer, got ${p.step}`);
}

/**
 * The id the sampler writes for a row with a NaN or +inf logit, or only -inf ones (shaders/sample.wgsl):
 * past every vocabulary, so a step's reader can tell it from a token.
 */
export const NON_FINITE_ID = 0xfffffffe;

export interface SampleArgs {
  rows: number;
  vocab: number;
  /** [rows, vocab] f32 logits. */
  logits: GPUBuffer;
  /** [rows] u32 sampled token ids out (NON_FINITE_ID for a row without a finite maximum). */
  ids: GPUBuffer;
  /** The first call's settings; later calls change them with setSampling. */
  sampling: SamplingParams;
  /** [rows, tokenMaskWords(vocab)] u32: bit j % 32 of word j / 32 set where token j may be sampled. */
  tokenMask?: GPUBuffer;
  /** [rows, vocab] f32 out: each row's kept distribution (0 outside the kept set; 1 at the argmax at temperature 0; all 0 for a NON_FINITE_ID row). */
  probs?: GPUBuffer;
  label?: string;
}

/** u32 words of one row's token mask. */
export function tokenMaskWords(vocab: number): number {
  return Math.ceil(vocab / 32);
}

export interface PreparedSample extends PreparedCall {
  /** Write new settings (seed, step, ...) before the next submit that holds the dispatch. */
  setSampling(p: SamplingParams): void;
}

export function createSample(ctx: KernelContext, options: SampleOptions = {}): Sample {
  const { device } = ctx.gpu;
  const software = options.software ?? ctx.gpu.adapter.isSoftware;
  const { workgroupSize, radixBits } = software ? SOFTWARE_TUNING : GPU_TUNING;
  // A variant is compiled on the first call that needs it.
  const pipeline = (mask: 'on' | 'off', probs: 'on' | 'off') =>
    kernelPipeline(ctx.pipelines, {
      kernel: 'sample',
      source: shaderSource,
      entryPoint: 'sample',
      axes: SAMPLE_AXES,
      variant: { mask, probs },
      constants: { WG: workgroupSize, SERIAL_REDUCE: software ? 1 : 0, RADIX_BITS: radixBits },
      bindings: ['uniform', 'read-only-storage', 'storage', mask === 'on' ? 'read-only-storage' : undefined, probs === 'on' ? 'storage' : undefined],
    });
  return {
    name: 'sample',
    software,
    workgroupSize,
    radixBits,
    prepare(args) {
      const { rows, vocab } = args;
      const label = args.label ?? 'sample';
      checkCounts(label, { vocab });
      checkCounts(label, { rows }, 0);
      checkU32Indices(label, { 'rows * vocab': rows * vocab });
      checkBindings(device, label, { logits: [args.logits, 4 * rows * vocab], ids: [args.ids, 4 * rows] });
      const { tokenMask, probs } = args;
      if (tokenMask) checkBindings(device, label, { tokenMask: [tokenMask, 4 * rows * tokenMaskWords(vocab)] });
      if (probs) checkBindings(device, label, { probs: [probs, 4 * rows * vocab] });
      const uniforms = new Uniforms(device, label, ['u32', 'u32', 'f32', 'u32', 'f32', 'u32', 'u32']);
      let current = args.sampling;
      const setSampling = (p: SamplingParams): void => {
        checkSamplingParams(p);
        uniforms.write([rows, vocab, p.temperature, p.topK, p.topP, p.seed, p.step]);
        current = p;
      };
      setSampling(args.sampling);
      const bindings = [args.logits, args.ids, tokenMask, probs];
      const call = singleDispatch({ device, label, pipeline: pipeline(tokenMask ? 'on' : 'off', probs ? 'on' : 'off'), uniforms, bindings, workgroups: rows, cost: { bytes: 0, flops: 0 } });
      const shape = () => ({ rows, vocab, sampling: current, radixBits, masked: tokenMask !== undefined, withProbs: probs !== undefined });
      return {
        get bytes() {
          return sampleCost(shape()).bytes;
        },
        get flops() {
          return sampleCost(shape()).flops;
        },
        setSampling,
        encode: call.encode,
        destroy: call.destroy,
      };
    },
  };
}
