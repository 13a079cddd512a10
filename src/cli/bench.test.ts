// webmoe bench --decode on the shipped checkpoint: the JSON carries the step's cost (dispatches
// per token, CPU and GPU time per step) and the bytes floor beside tok/s. Short runs: the figures
// are checked for what they must be, not for their speed.

import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../testing/fixtures.ts';
import { formatDecode, temperatureList } from './bench.ts';
import { runCli } from './testing.ts';

const SHIPPED = `${REPO_ROOT}/public/models/webmoe-kjv-12m`;

describe('webmoe bench --decode --json', () => {
  it('prints dispatches per token, the step times and the bytes floor', async () => {
    const r = await runCli(['bench', '--decode', SHIPPED, '--json', '--quick', '--no-peers', '--max-tokens', '4', '--prompt', 'In the beginning', '--temperatures', '0,1']);
    expect(r.code).toBe(0);
    const report = JSON.parse(r.out);
    expect(report.checkpoint).toBe(SHIPPED);
    expect(report.identical).toBe(true);
    // Plain decoding: one submit per token, so every dispatch of a step is a dispatch per token.
    const plain = report.plain.step;
    expect(plain.steps_per_token).toBe(1);
    expect(Number.isInteger(plain.dispatches_per_token)).toBe(true);
    expect(plain.dispatches_per_token).toBe(plain.dispatches_per_step);
    expect(report.dispatches_per_token).toBe(plain.dispatches_per_token);
    expect(report.cpu_record_submit_ms).toBeGreaterThan(0);
    expect(report.gpu_ms_per_step).toBeGreaterThan(0); // SwiftShader has timestamp queries
    // MTP: a verify step makes more than one token when drafts are accepted, and runs more dispatches.
    const mtp = report.mtp.step;
    expect(mtp.steps_per_token).toBeLessThan(1);
    expect(mtp.dispatches_per_step).toBeGreaterThan(plain.dispatches_per_step);
    // The floor: 23.5 MiB of weights on the GPU, of which a token reads the part outside the embedding, the MTP layer and the unchosen experts.
    const floor = report.bytes_floor;
    expect(floor.bytes_per_token).toBeGreaterThan(2 ** 20);
    expect(floor.bytes_per_token).toBeLessThan(20 * 2 ** 20);
    expect(floor.floor_ms_per_token).toBeCloseTo(floor.bytes_per_token / (floor.copy_gbps * 1e6), 9);
    expect(floor.measured_over_floor).toBeCloseTo(1000 / report.plain.tokensPerS / floor.floor_ms_per_token, 9);
    expect(report.model_peer).toBeUndefined(); // --no-peers
    // The batch-1 bound of speculation, from the measured acceptance and expert overlap.
    const b = report.bound;
    expect(b.acceptance).toBeCloseTo(report.mtp.acceptance, 12);
    expect(b.routed_share).toBeGreaterThan(0);
    expect(b.routed_share).toBeLessThan(1);
    expect(b.overlap).toBeGreaterThanOrEqual(0);
    expect(b.overlap).toBeLessThanOrEqual(1);
    expect(b.bound).toBeCloseTo((1 + b.acceptance) / (1 + b.routed_share * (1 - b.overlap)), 12);
    expect(report.offload).toBeNull(); // every expert resident
    // Acceptance by temperature: greedy drafts alone at 0, greedy and sampled at 1, counted from the runs' own stats.
    const acc = report.acceptance_by_temperature as { temperature: number; drafts: string; drafted: number; accepted: number; acceptance: number }[];
    expect(acc.map((a) => `${a.temperature} ${a.drafts}`)).toEqual(['0 greedy', '1 greedy', '1 sampled']);
    for (const a of acc) {
      expect(a.drafted).toBeGreaterThan(0);
      expect(a.accepted).toBeLessThanOrEqual(a.drafted);
      expect(a.acceptance).toBeCloseTo(a.accepted / a.drafted, 12);
    }

    // Without --json, the same figures as text.
    const text = formatDecode(report);
    expect(text).toMatch(/step: \d+\.\d dispatches per token \(\d+ per step, 1\.00 steps per token\), \d+\.\d\d ms CPU to record and submit a step, \d+\.\d\d ms GPU per step/);
    expect(text).toMatch(/bound at batch 1: \(1 \+ a\) \/ \(1 \+ r \(1 - o\)\) = .* = \d+\.\d\dx .*; measured \d+\.\d\dx/);
    expect(text).toMatch(/bytes floor: \d+\.\d\d MiB of weights per token at \d+\.\d GB\/s copy = \d+\.\d{3} ms per token/);
    expect(text).toMatch(/drafts accepted by temperature \(top_p 0\.95\):\n {2}T=0 greedy {2}\d+\/\d+ \(\d+\.\d%\)/);
    expect(text).toMatch(/ {2}T=1 sampled \d+\/\d+ \(\d+\.\d%\)/);
  });

  it('--temperatures takes numbers >= 0 separated by commas, or none', () => {
    expect(temperatureList('0, 0.7,1')).toEqual([0, 0.7, 1]);
    expect(temperatureList('none')).toEqual([]);
    expect(() => temperatureList('hot')).toThrow(/--temperatures takes numbers >= 0/);
    expect(() => temperatureList('0,-1')).toThrow(/got "0,-1"/);
  });

  it('--expert-slots 1: the offload figures, from the decode steps alone', async () => {
    const r = await runCli(['bench', '--decode', SHIPPED, '--json', '--quick', '--no-peers', '--max-tokens', '4', '--prompt', 'In the beginning', '--expert-slots', '1']);
    expect(r.code).toBe(0);
    const report = JSON.parse(r.out);
    expect(report.identical).toBe(true);
    const o = report.offload;
    expect(o.expert_slots).toBe(1);
    expect(o.n_routed_experts).toBe(16);
    // A decode token asks each of the 4 MoE layers for 4 distinct experts: 16 accesses per token,
    // of which one slot per layer can hit at most 4. A prefill counted in would add more.
    const accessesPerToken = o.misses_per_token / (1 - o.hit_rate);
    expect(accessesPerToken).toBeCloseTo(16, 9);
    expect(o.misses_per_token).toBeGreaterThanOrEqual(12);
    expect(o.uploaded_bytes_per_token).toBeCloseTo(o.misses_per_token * o.expert_bytes, 6);
    expect(o.expert_bytes % 4).toBe(0);
    expect(o.route_wait_ms_per_token).toBeGreaterThan(0);
    expect(o.upload_bandwidth_gb_s).toBeGreaterThan(0);
    expect(Number.isFinite(o.upload_bandwidth_gb_s)).toBe(true);
    expect(o.predicted_upload_ms_per_token).toBeCloseTo(o.uploaded_bytes_per_token / (o.upload_bandwidth_gb_s * 1e6), 9);
    expect(o.predicted_ms_per_token).toBeCloseTo(report.bytes_floor.floor_ms_per_token + o.predicted_upload_ms_per_token, 9);
    expect(o.measured_ms_per_token).toBeCloseTo(report.bytes_floor.measured_ms_per_token, 9);
    expect(o.mtp.hit_rate).toBeGreaterThanOrEqual(0);
    expect(o.mtp.hit_rate).toBeLessThanOrEqual(0.25);
    expect(o.mtp.misses_per_token).toBeGreaterThan(0);

    expect(formatDecode(report)).toMatch(/expert offload: 1 of 16 experts per MoE layer on the GPU; plain decoding: hit rate \d+\.\d%, \d+\.\d\d misses per token .*\n  upload \d+\.\d\d GB\/s .*bytes model: floor \d+\.\d{3} ms \+ upload \d+\.\d{3} ms = \d+\.\d{3} ms per token, measured \d+\.\d ms/);
  });

  it('SIGTERM mid-measurement: no report, status 143, the signals handed back', async () => {
    let sent = false;
    const r = await runCli(['bench', '--decode', SHIPPED, '--json', '--quick', '--no-peers', '--max-tokens', '4', '--prompt', 'In the beginning'], {
      onStderr: (piece) => {
        if (!sent && piece.includes('run 1:')) (sent = true), process.emit('SIGTERM');
      },
    });
    expect(sent).toBe(true);
    expect(r.code).toBe(143);
    expect(r.out).toBe('');
    expect(r.err).toMatch(/\[bench\] stopped \(SIGTERM\): no report/);
    expect(process.listenerCount('SIGTERM')).toBe(0);
    expect(process.listenerCount('SIGINT')).toBe(0);
  });

  it('Ctrl-C before the first kernel case: status 130', async () => {
    let sent = false;
    const r = await runCli(['bench', '--kernels', '--quick', '--no-peers', '--filter', 'rmsnorm'], {
      onStderr: (piece) => {
        if (!sent && piece.includes('measuring the adapter ceilings')) (sent = true), process.emit('SIGINT');
      },
    });
    expect(r.code).toBe(130);
    expect(r.out).toBe('');
    expect(process.listenerCount('SIGINT')).toBe(0);
  });
});
