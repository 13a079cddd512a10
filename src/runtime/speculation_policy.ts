// When speculative decoding pays (GenerateOptions.speculative 'auto', the default): a verify step
// (2 rows of the main model, then the MTP layer) emits 1 + a tokens on average for an acceptance
// a, a plain step 1, so speculation is faster exactly when
//     verify step time < (1 + a) * plain step time.
// Both times are measured at load on this adapter and model (a few steps of each on a scratch
// cache; remembered in a VariantStore under the adapter's and the model's identity, as the kernel
// variants are) and refreshed by every step the requests run; a comes from the requests' own
// verify steps, starting from a prior. A request decides once, at its start (its plans and the
// MTP layer's cache rows are made for one kind of step). Sampling is the same either way: a
// verify row draws the uniform of the token it samples (shaders/sample.wgsl), so with greedy
// drafts and a seed the output does not depend on what the policy chose; that is why a seeded
// request left to 'auto' drafts greedily (GenerateOptions.drafts), while sampled drafts keep the
// output's distribution, not its tokens. The acceptance is one running figure over all requests,
// whatever their temperature and drafts.

import type { GpuModel } from '../model/gpu_model.ts';
import { processVariantStore, type VariantStore } from '../gpu/variant_store.ts';

/** The acceptance assumed before any request has shown its own (the shipped checkpoint's is ~0.68). */
export const PRIOR_ACCEPTANCE = 0.6;
/** Speculate only when the verify step is this much cheaper than the break-even: measurement noise does not flip it. */
export const MARGIN = 0.95;
/** Where speculation does not pay but could at a higher acceptance, one auto request in this many speculates, to measure it again. */
export const EXPLORE_EVERY = 16;
/** Weight of a new step time in the running averages (and of a verify outcome in the acceptance). */
const STEP_WEIGHT = 0.1;
const ACCEPTANCE_WEIGHT = 0.05;
/** Steps of each kind timed at load, interleaved, after one of each to warm up; the medians are kept (CPU adapters jitter). */
const CALIBRATION_STEPS = 5;
/** Bump when the measurement changes enough that a remembered one no longer holds. */
const REVISION = 2; // 2: decode steps without norm dispatches (model/layer.ts), cheaper than what 1 measured

export interface SpeculationCosts {
  /** ms of a plain decode step (one row, its sampled id read back). */
  plainStepMs: number;
  /** ms of a verify step (two rows and the MTP layer, both ids and the next draft read back). */
  verifyStepMs: number;
}

export interface SpeculationSnapshot extends SpeculationCosts {
  /** The acceptance the requests have shown (the prior until one speculates). */
  acceptance: number;
  /** Verify steps the acceptance has seen since load. */
  verifySteps: number;
  /** Whether an auto request starting now would speculate (before exploration). */
  pays: boolean;
  /** Whether the costs came from this load's measurement or a remembered one. */
  measured: 'at load' | 'remembered';
}

export class SpeculationPolicy {
  private plainMs: number;
  private verifyMs: number;
  private acceptance = PRIOR_ACCEPTANCE;
  private verifySteps = 0;
  private autoRequests = 0;

  constructor(costs: SpeculationCosts, private readonly measured: 'at load' | 'remembered') {
    this.plainMs = costs.plainStepMs;
    this.verifyMs = costs.verifyStepMs;
  }

  /** Whether speculation is faster at the present costs and acceptance. */
  pays(): boolean {
    return this.verifyMs < MARGIN * (1 + this.acceptance) * this.plainMs;
  }

  /**
   * Whether an auto request starting now speculates: when it pays, and otherwise in one request of
   * EXPLORE_EVERY where it could pay at some acceptance (a verify step under twice a plain one),
   * so a better acceptance than the present estimate gets seen.
   */
  chooseForRequest(): boolean {
    this.autoRequests++;
    if (this.pays()) return true;
    return this.verifyMs < 2 * MARGIN * this.plainMs && this.autoRequests % EXPLORE_EVERY === 0;
  }

  observePlain(ms: number): void {
    if (ms > 0 && Number.isFinite(ms)) this.plainMs += STEP_WEIGHT * (ms - this.plainMs);
  }

  observeVerify(ms: number, accepted: boolean): void {
    if (ms > 0 && Number.isFinite(ms)) this.verifyMs += STEP_WEIGHT * (ms - this.verifyMs);
    this.acceptance += ACCEPTANCE_WEIGHT * ((accepted ? 1 : 0) - this.acceptance);
    this.verifySteps++;
  }

  snapshot(): SpeculationSnapshot {
    return { plainStepMs: this.plainMs, verifyStepMs: this.verifyMs, acceptance: this.acceptance, verifySteps: this.verifySteps, pays: this.pays(), measured: this.measured };
  }
}

/** One store per process (localStorage on a page, memory in a Worker or in Node). */

/**
 * The policy of a model with an MTP layer on this adapter: costs remembered under `identity`, or
 * measured now on a scratch cache (CALIBRATION_STEPS plain and verify steps after one of each).
 */
/** Where the step costs of an adapter and model are remembered (a new REVISION forgets the old). */
export function speculationKey(identity: string): string {
  return `webmoe.speculation.v${REVISION}.${identity}`;
}

export async function speculationPolicy(model: GpuModel, identity: string, store: VariantStore = processVariantStore()): Promise<SpeculationPolicy> {
  const key = speculationKey(identity);
  const remembered = parseCosts(store.get(key));
  if (remembered) return new SpeculationPolicy(remembered, 'remembered');
  const costs = await measureStepCosts(model);
  store.set(key, JSON.stringify(costs));
  return new SpeculationPolicy(costs, 'at load');
}

function parseCosts(text: string | undefined): SpeculationCosts | undefined {
  if (text === undefined) return undefined;
  try {
    const c = JSON.parse(text) as Partial<SpeculationCosts>;
    const ok = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v) && v > 0;
    return ok(c.plainStepMs) && ok(c.verifyStepMs) ? { plainStepMs: c.plainStepMs, verifyStepMs: c.verifyStepMs } : undefined;
  } catch {
    return undefined; // a corrupt entry is measured again
  }
}

/** Times plain and verify steps, greedy, on a scratch cache of the model's own continuation of a few ids: the median of each. */
export async function measureStepCosts(model: GpuModel): Promise<SpeculationCosts> {
  const prompt = [0, 1, 2, 3].map((id) => id % model.config.vocab_size);
  const positions = prompt.length + 3 * (1 + CALIBRATION_STEPS) + 1;
  const cache = model.createCache(positions);
  const plans = model.plans(cache, { captureRouting: false });
  try {
    const greedy = (step: number) => ({ temperature: 0, topK: 0, topP: 1, seed: 0, step });
    const first = await model.forward(plans, prompt, 0, { sample: greedy(0), mtp: true });
    let id = first.id!;
    let draft = first.draft ?? id; // a broken MTP layer drafts nothing; any id times the same
    let position = prompt.length;
    const timed = async (work: () => Promise<void>) => {
      const started = performance.now();
      await work();
      return performance.now() - started;
    };
    const verifyMs: number[] = [];
    const plainMs: number[] = [];
    for (let i = 0; i <= CALIBRATION_STEPS; i++) {
      const v = await timed(async () => {
        const r = await model.verify(plans, id, draft, position, greedy(position));
        [id, draft] = [r.ids[0], r.drafts[0] ?? r.ids[0]]; // any id times the same: a broken MTP layer's draft will do
      });
      position += 1; // the draft's row is overwritten by the next step: only the costs matter here
      const p = await timed(async () => {
        id = (await model.forward(plans, [id], position, { sample: greedy(position) })).id!;
      });
      position += 1;
      if (i > 0) {
        verifyMs.push(v);
        plainMs.push(p);
      }
    }
    return { plainStepMs: median(plainMs), verifyStepMs: median(verifyMs) };
  } finally {
    plans.destroy();
    cache.destroy();
  }
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}
