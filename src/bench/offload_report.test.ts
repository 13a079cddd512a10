// The offload figures from the cache's counters: rates per decoded token, and the bytes model's
// prediction (floor + uploads at the measured bandwidth). Random counters: the identities hold for any.

import { describe, expect, it } from 'vitest';
import { rng, testSeed } from '../gpu/testing.ts';
import { offloadRates, offloadReport } from './offload_report.ts';

describe('offloadReport', () => {
  it('turns the counters into rates per token and predicts floor + uploads', () => {
    const random = rng(testSeed('offloadReport'));
    const expertBytes = 4 * (1 + Math.floor(random() * 50_000));
    const tokens = 1 + Math.floor(random() * 100);
    const misses = Math.floor(random() * 20 * tokens);
    const hits = Math.floor(random() * 20 * tokens);
    const tally = { hits, misses, uploadedBytes: misses * expertBytes, routeWaitMs: random() * 100 };
    const uploadGbps = 0.1 + random() * 30;
    const floorMs = random() * 5;
    const r = offloadReport({
      expertSlots: 3, nRoutedExperts: 16, expertBytes, uploadGbps, floorMsPerToken: floorMs,
      plain: { tally, tokens, msPerToken: 42 },
      mtp: { tally: { hits: 0, misses: 0, uploadedBytes: 0, routeWaitMs: 0 }, tokens: 0 },
    });
    expect(r.hit_rate).toBe(hits + misses > 0 ? hits / (hits + misses) : null);
    expect(r.misses_per_token).toBeCloseTo(misses / tokens, 12);
    expect(r.uploaded_bytes_per_token).toBeCloseTo((misses * expertBytes) / tokens, 6);
    expect(r.route_wait_ms_per_token).toBeCloseTo(tally.routeWaitMs / tokens, 12);
    // Bytes over GB/s: 1 GB/s moves 1e6 bytes per millisecond.
    expect(r.predicted_upload_ms_per_token).toBeCloseTo(r.uploaded_bytes_per_token / (uploadGbps * 1e6), 12);
    expect(r.predicted_ms_per_token).toBeCloseTo(floorMs + r.predicted_upload_ms_per_token, 12);
    expect(r.measured_ms_per_token).toBe(42);
    expect(r).toMatchObject({ expert_slots: 3, n_routed_experts: 16, expert_bytes: expertBytes, upload_bandwidth_gb_s: uploadGbps });
    // No decode step: no hit rate to speak of, nothing per token.
    expect(r.mtp).toEqual({ hit_rate: null, misses_per_token: 0, uploaded_bytes_per_token: 0, route_wait_ms_per_token: 0 });
  });

  it('every access a hit (all slots warm): rate 1, no uploads, the prediction is the floor', () => {
    const r = offloadRates({ hits: 64, misses: 0, uploadedBytes: 0, routeWaitMs: 3 }, 4);
    expect(r).toEqual({ hit_rate: 1, misses_per_token: 0, uploaded_bytes_per_token: 0, route_wait_ms_per_token: 0.75 });
    const report = offloadReport({ expertSlots: 16, nRoutedExperts: 16, expertBytes: 4, uploadGbps: 1, floorMsPerToken: 1.5, plain: { tally: { hits: 64, misses: 0, uploadedBytes: 0, routeWaitMs: 3 }, tokens: 4, msPerToken: 9 } });
    expect(report.predicted_ms_per_token).toBe(1.5);
    expect(report.mtp).toBeUndefined();
  });
});
