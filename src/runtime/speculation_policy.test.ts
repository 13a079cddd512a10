// The decision of speculative 'auto' (speculation_policy.ts): speculate exactly when a verify step
// costs less than (1 + acceptance) plain steps (with the margin), follow the steps the requests
// run, explore one request in EXPLORE_EVERY where it could pay, and remember the load's
// measurement under the adapter's and model's identity (a corrupt entry is measured again).

import { describe, expect, it } from 'vitest';
import { memoryVariantStore } from '../gpu/variant_store.ts';
import type { GpuModel } from '../model/gpu_model.ts';
import { EXPLORE_EVERY, MARGIN, PRIOR_ACCEPTANCE, SpeculationPolicy, speculationKey, speculationPolicy } from './speculation_policy.ts';

const policy = (plainStepMs: number, verifyStepMs: number) => new SpeculationPolicy({ plainStepMs, verifyStepMs }, 'at load');

describe('SpeculationPolicy', () => {
  it('pays when a verify step costs less than (1 + acceptance) plain steps, with the margin', () => {
    const breakEven = MARGIN * (1 + PRIOR_ACCEPTANCE) * 10;
    expect(policy(10, breakEven - 0.01).pays()).toBe(true);
    expect(policy(10, breakEven + 0.01).pays()).toBe(false);
    expect(policy(10, 12).snapshot()).toMatchObject({ plainStepMs: 10, verifyStepMs: 12, acceptance: PRIOR_ACCEPTANCE, verifySteps: 0, pays: true, measured: 'at load' });
  });

  it('follows the acceptance and step times the requests show', () => {
    const p = policy(10, 14); // pays at the prior (14 < 0.95 * 1.6 * 10 = 15.2)
    for (let i = 0; i < 40; i++) p.observeVerify(14, false); // nothing accepted
    expect(p.snapshot().acceptance).toBeLessThan(0.1);
    expect(p.pays()).toBe(false);
    for (let i = 0; i < 80; i++) p.observeVerify(14, true);
    expect(p.pays()).toBe(true);
    for (let i = 0; i < 60; i++) p.observePlain(5); // plain steps got cheaper
    expect(p.snapshot().plainStepMs).toBeLessThan(5.1);
    expect(p.pays()).toBe(false);
    p.observePlain(Number.NaN);
    p.observePlain(-1);
    expect(Number.isFinite(p.snapshot().plainStepMs)).toBe(true);
  });

  it('explores one auto request in EXPLORE_EVERY where a verify step is under two plain ones, never where it is not', () => {
    const could = policy(10, 18); // 18 > 15.2: no pay at the prior; 18 < 19: pays at a high acceptance
    const choices = Array.from({ length: 3 * EXPLORE_EVERY }, () => could.chooseForRequest());
    expect(choices.filter(Boolean)).toHaveLength(3);
    expect(choices[EXPLORE_EVERY - 1]).toBe(true);
    const never = policy(10, 25);
    expect(Array.from({ length: 3 * EXPLORE_EVERY }, () => never.chooseForRequest()).some(Boolean)).toBe(false);
    const pays = policy(10, 11);
    expect(Array.from({ length: 5 }, () => pays.chooseForRequest()).every(Boolean)).toBe(true);
  });
});

describe('speculationPolicy', () => {
  const unmeasurable = {} as GpuModel; // a remembered entry must not touch the model

  it('takes a remembered measurement without measuring, and measures again over a corrupt one', async () => {
    const store = memoryVariantStore();
    // an earlier revision's entry (steps measured before the norms moved into the GEMVs) is not taken
    store.set('webmoe.speculation.v1.adapter|model', JSON.stringify({ plainStepMs: 3, verifyStepMs: 4 }));
    await expect(speculationPolicy(unmeasurable, 'adapter|model', store)).rejects.toThrow(TypeError);
    const key = speculationKey('adapter|model');
    store.set(key, JSON.stringify({ plainStepMs: 3, verifyStepMs: 4 }));
    const p = await speculationPolicy(unmeasurable, 'adapter|model', store);
    expect(p.snapshot()).toMatchObject({ plainStepMs: 3, verifyStepMs: 4, measured: 'remembered' });
    for (const bad of ['{', JSON.stringify({ plainStepMs: 0, verifyStepMs: 4 }), JSON.stringify({ plainStepMs: 'x' })]) {
      store.set(key, bad);
      await expect(speculationPolicy(unmeasurable, 'adapter|model', store)).rejects.toThrow(TypeError); // it tried to measure
    }
  });
});
