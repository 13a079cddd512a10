// The verify step's sampling with sampled drafts (speculative sampling, speculative_accept.ref.ts):
// the main model's two logit rows are sampled as a plain step would (temperature, top-k, top-p,
// the grammar's mask; row r with the uniform of token step + r) by the sampler's probs variant,
// which also writes p; then the acceptance kernel turns row 0's id into the step's first output
// token: the draft d with probability min(1, p(d) / q(d)), else a sample of norm(max(0, p - q)),
// with q the MTP module's distribution d was sampled from (the plan set's draftQ row, left there by
// the step that drafted d: mtp.ts). On acceptance row 1's id is a sample of p(. | d). All on the
// GPU, in the step's submit: the host still reads only the two ids and accepts iff ids[0] == d.

import { ArgumentError } from '../errors.ts';
import type { PreparedSample, SamplingParams } from '../kernels/sample.ts';
import { tokenMaskWords } from '../kernels/sample.ts';
import type { PreparedSpeculativeAccept } from '../kernels/speculative_accept.ts';
import type { ModelKernels } from './model_kernels.ts';

export interface SpeculativeVerifyOptions {
  kernels: ModelKernels;
  /** [2, vocab] f32: the head's logits of the verify rows (current, draft). */
  logits: GPUBuffer;
  /** [2] u32: the ids the step reads back (and the MTP module drafts after). */
  ids: GPUBuffer;
  vocab: number;
  /** [2, draftVocab] f32: the plan set's q rows (mtp.ts MtpPlanOptions.draftQ). */
  draftQ: GPUBuffer;
  draftVocab: number;
}

export interface SpeculativeVerifyInput {
  sampling: SamplingParams;
  /** [2, ceil(vocab / 32)] u32: the grammar's allowed tokens per row. */
  tokenMask?: Uint32Array<ArrayBuffer>;
  /** The draft (the step's second input id) and the draftQ row holding the q it was sampled from. */
  draft: number;
  qRow: number;
}

export interface SpeculativeVerify {
  encode(encoder: GPUCommandEncoder, input: SpeculativeVerifyInput): void;
  destroy(): void;
}

export function prepareSpeculativeVerify({ kernels: k, logits, ids, vocab, draftQ, draftVocab }: SpeculativeVerifyOptions): SpeculativeVerify {
  const { device } = k.gpu;
  const rows = 2;
  const owned: { destroy(): void }[] = [];
  const keep = <P extends { destroy(): void }>(p: P): P => (owned.push(p), p);
  const buffer = (label: string, size: number, usage: number) => keep(device.createBuffer({ label, size: Math.max(16, size), usage }));
  try {
    const probs = buffer('verify.probs', 4 * rows * vocab, GPUBufferUsage.STORAGE); // [2, vocab] f32: p of each row
    const accept = keep(k.speculativeAccept.prepare({ vocab, draftVocab, qRows: 2, p: probs, q: draftQ, ids, label: 'verify.accept' }));
    // Made on the first step that needs them: the sampler with and without the grammar's mask.
    let plain: PreparedSample | undefined;
    let masked: PreparedSample | undefined;
    let maskBuffer: GPUBuffer | undefined;
    return {
      encode(encoder, { sampling, tokenMask, draft, qRow }) {
        if (!(sampling.temperature > 0)) throw new ArgumentError('the sampled-draft rule is for temperature > 0; at temperature 0 the draft is the argmax and is accepted iff the main model picks it');
        let sample: PreparedSample;
        if (tokenMask) {
          const words = tokenMaskWords(vocab);
          if (tokenMask.length !== rows * words) throw new ArgumentError(`verify: the token mask has ${tokenMask.length} words; 2 rows of vocab ${vocab} need ${rows * words}`);
          maskBuffer ??= buffer('verify.token_mask', 4 * rows * words, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST);
          device.queue.writeBuffer(maskBuffer, 0, tokenMask);
          sample = masked ??= keep(k.sample.prepare({ rows, vocab, logits, ids, probs, tokenMask: maskBuffer, sampling, label: 'verify.sample_masked' }));
        } else {
          sample = plain ??= keep(k.sample.prepare({ rows, vocab, logits, ids, probs, sampling, label: 'verify.sample' }));
        }
        sample.setSampling(sampling);
        accept.setDraft({ draft, qRow, seed: sampling.seed, step: sampling.step });
        const pass = encoder.beginComputePass({ label: 'verify.sample_accept' });
        sample.encode(pass);
        accept.encode(pass);
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
