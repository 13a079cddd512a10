import { describe, expect, it } from 'vitest';
import type { DecodeReport } from '../../bench/decode_report.ts';
import { offloadReport } from '../../bench/offload_report.ts';
import { ArgumentError } from '../../errors.ts';
import { offloadRows, parseExpertSlots } from './offload_rows.ts';
import type { Cell } from './tables.ts';

// A report as decode_report.ts builds it: 2 of 16 slots, one expert 72 KiB; plain decoding's 8
// tokens hit 30 times and missed 10, 2 GB/s upload, a 0.5 ms floor, 40 ms per token measured.
const EXPERT = 72 * 1024;
const offload = (mtp: boolean) =>
  offloadReport({
    expertSlots: 2,
    nRoutedExperts: 16,
    expertBytes: EXPERT,
    plain: { tally: { hits: 30, misses: 10, uploadedBytes: 10 * EXPERT, routeWaitMs: 16 }, tokens: 8, msPerToken: 40 },
    ...(mtp ? { mtp: { tally: { hits: 0, misses: 0, uploadedBytes: 0, routeWaitMs: 0 }, tokens: 0 } } : {}),
    uploadGbps: 2,
    floorMsPerToken: 0.5,
  });
const report = (o: DecodeReport['offload'], mtpTokensPerS?: number) =>
  ({ offload: o, bytes_floor: { floor_ms_per_token: 0.5 }, ...(mtpTokensPerS ? { mtp: { tokensPerS: mtpTokensPerS } } : {}) }) as Pick<DecodeReport, 'offload' | 'bytes_floor' | 'mtp'>;
const text = (c: Cell) => (typeof c === 'string' ? c : c.text);
const note = (c: Cell) => (typeof c === 'string' ? undefined : c.note);

describe('the expert slots field', () => {
  it('empty is every expert resident; a whole number of 1 or more is the slots', () => {
    expect(parseExpertSlots('')).toBeUndefined();
    expect(parseExpertSlots('  ')).toBeUndefined();
    expect(parseExpertSlots('2')).toBe(2);
    expect(parseExpertSlots(' 16 ')).toBe(16);
  });

  it('refuses what is not a slot count, naming the field', () => {
    for (const bad of ['0', '-1', '1.5', 'two', 'Infinity']) {
      expect(() => parseExpertSlots(bad)).toThrow(ArgumentError);
      expect(() => parseExpertSlots(bad)).toThrow(`Expert slots per layer must be a whole number of 1 or more (empty: every expert resident), got ${bad}`);
    }
  });
});

describe('the offload rows of the decode table', () => {
  it('are absent when every expert is resident', () => {
    expect(offloadRows(report(null))).toBeNull();
  });

  it('plain decoding: every figure with its unit, the prediction against the measured time', () => {
    const t = offloadRows(report(offload(false)))!;
    expect(t.columns.map((c) => c.label)).toEqual(['figure', 'plain decoding']);
    expect(t.rows.map((row) => row.map(text))).toEqual([
      ['Routed experts on the GPU', '2 of 16 per layer'],
      ['Cache hit rate', '75 %'],
      ['Misses', '1.25 per token'],
      ['Uploaded', '90 KiB per token'], // 10 experts of 72 KiB over 8 tokens
      ['Waiting for the router', '2 ms per token'],
      ['Upload bandwidth', '2 GB/s'],
      ['Bytes model', '0.546 ms per token'], // 0.5 ms + 92,160 B / 2 GB/s
      ['Measured', '40 ms per token'],
    ]);
    const cells = new Map(t.rows.map((row) => [text(row[0]), row[1]]));
    expect(note(cells.get('Upload bandwidth')!)).toBe('writeBuffer in chunks of one expert (72 KiB)');
    expect(note(cells.get('Bytes model')!)).toBe('floor 0.5 ms + uploads 0.0461 ms');
    expect(note(cells.get('Measured')!)).toBe('73.2× the prediction');
  });

  it('with MTP: its own rates and measured time beside plain decoding, no prediction of its own', () => {
    const t = offloadRows(report(offload(true), 50))!;
    expect(t.columns.map((c) => c.label)).toEqual(['figure', 'plain decoding', 'MTP speculative']);
    expect(t.rows.every((row) => row.length === 3)).toBe(true);
    const mtp = new Map(t.rows.map((row) => [text(row[0]), text(row[2])]));
    expect(mtp.get('Routed experts on the GPU')).toBe('2 of 16 per layer');
    expect(mtp.get('Cache hit rate')).toBe('no decode step'); // no access: hit_rate null
    expect(mtp.get('Misses')).toBe('0 per token');
    expect(mtp.get('Uploaded')).toBe('0 B per token');
    expect(mtp.get('Upload bandwidth')).toBe('2 GB/s');
    expect(mtp.get('Bytes model')).toBe('–');
    expect(mtp.get('Measured')).toBe('20 ms per token'); // 1000 / 50 tok/s
  });

  it('leaves the MTP column out when the report has offload rates but no MTP run', () => {
    const t = offloadRows(report(offload(true)))!;
    expect(t.columns).toHaveLength(2);
    expect(t.rows.every((row) => row.length === 2)).toBe(true);
  });
});
