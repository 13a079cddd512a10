// Speculative sampling's acceptance kernel wrapper: pipeline, bind group, params, dispatch,
// bytes/FLOPs. Shader: shaders/speculative_accept.wgsl; reference: speculative_accept.ref.ts.
// Runs in the verify step after the sampler has written row 0's sample y0 and p (its probs
// variant, sample.ts): it turns ids[0] into the step's first output token, the draft when accepted
// (so the host's rule stays "accepted iff ids[0] == draft") or a sample of the residual. The draft,
// q's row and the step change per call through `setDraft` (one small uniform write).

import shaderSource from '../../shaders/speculative_accept.wgsl?raw';
import { ArgumentError } from '../errors.ts';
import { checkBindings, checkCounts, checkU32Indices, kernelPipeline, singleDispatch, Uniforms, type Cost, type Kernel, type KernelContext, type PreparedCall } from '../gpu/kernel.ts';

export { ACCEPT_SALT, DRAFT_SALT, draftSeed, RESIDUAL_SALT } from './speculative_accept.ref.ts';

export interface SpeculativeAcceptOptions {
  /** Fewer invocations (CPU adapters, where they cost more than the work). Default: the adapter's isSoftware. */
  software?: boolean;
}

export interface SpeculativeAcceptArgs {
  /** p's width: the main model's vocab_size. */
  vocab: number;
  /** q's width: the MTP module's draft vocabulary (<= vocab). */
  draftVocab: number;
  /** Rows of q the buffer holds (setDraft picks one). */
  qRows: number;
  /** [>= vocab] f32: p, row 0 of the sampler's probs. */
  p: GPUBuffer;
  /** [qRows, draftVocab] f32: the MTP module's kept distributions. */
  q: GPUBuffer;
  /** [>= 1] u32: ids[0] holds y0 and gets the first output token. */
  ids: GPUBuffer;
  label?: string;
}

export interface DraftToAccept {
  /** The draft id (the verify step's second input id). */
  draft: number;
  /** The row of q it was sampled from. */
  qRow: number;
  /** The request's seed and the step: the uniforms' key. */
  seed: number;
  step: number;
}

export interface PreparedSpeculativeAccept extends PreparedCall {
  /** Write the next call's draft, q row, seed and step. */
  setDraft(d: DraftToAccept): void;
}

/** At most two passes over p and q (the accept test reads one value of each). */
export function speculativeAcceptCost({ vocab, draftVocab }: { vocab: number; draftVocab: number }): Cost {
  return { bytes: 2 * 4 * (vocab + draftVocab) + 4, flops: 2 * 2 * vocab };
}

export function createSpeculativeAccept(ctx: KernelContext, options: SpeculativeAcceptOptions = {}): Kernel<SpeculativeAcceptArgs, PreparedSpeculativeAccept> {
  const { device } = ctx.gpu;
  const software = options.software ?? ctx.gpu.adapter.isSoftware;
  const pipeline = kernelPipeline(ctx.pipelines, {
    kernel: 'speculative_accept',
    source: shaderSource,
    constants: { WG: software ? 16 : 256 },
    bindings: ['uniform', 'read-only-storage', 'read-only-storage', 'storage'],
  });
  return {
    name: 'speculative_accept',
    prepare({ vocab, draftVocab, qRows, p, q, ids, label = 'speculative_accept' }) {
      checkCounts(label, { vocab, draftVocab, qRows });
      if (draftVocab > vocab) throw new ArgumentError(`${label}: draftVocab ${draftVocab} exceeds vocab ${vocab}`);
      checkU32Indices(label, { 'qRows * draftVocab': qRows * draftVocab });
      checkBindings(device, label, { p: [p, 4 * vocab], q: [q, 4 * qRows * draftVocab], ids: [ids, 4] });
      const uniforms = new Uniforms(device, label, ['u32', 'u32', 'u32', 'u32', 'u32', 'u32']);
      const setDraft = ({ draft, qRow, seed, step }: DraftToAccept): void => {
        if (!(Number.isInteger(draft) && draft >= 0 && draft < vocab)) throw new ArgumentError(`${label}: the draft ${draft} is not an id in [0, ${vocab})`);
        if (!(Number.isInteger(qRow) && qRow >= 0 && qRow < qRows)) throw new ArgumentError(`${label}: q row ${qRow} is not in [0, ${qRows})`);
        for (const [name, v] of [['seed', seed], ['step', step]] as const) {
          if (!(Number.isInteger(v) && v >= 0 && v <= 0xffffffff)) throw new ArgumentError(`${label}: ${name} must be a u32 integer, got ${v}`);
        }
        uniforms.write([vocab, draftVocab, qRow, draft, seed, step]);
      };
      setDraft({ draft: 0, qRow: 0, seed: 0, step: 0 });
      return {
        ...singleDispatch({ device, label, pipeline, uniforms, bindings: [p, q, ids], workgroups: 1, cost: speculativeAcceptCost({ vocab, draftVocab }) }),
        setDraft,
      };
    },
  };
}
