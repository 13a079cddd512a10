import { describe, expect, it, vi, afterEach } from 'vitest';
import { mkdtempSync, writeFileSync, copyFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { officialFixture } from '../testing/fixtures.ts';
import { ODD } from '../../tools/checkpoint/presets.ts';
import { writeCheckpoint } from '../../tools/checkpoint/write.ts';
import { main } from './main.ts';

/** Run the CLI in-process; returns the exit status and what it printed. */
async function run(...argv: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  vi.spyOn(console, 'log').mockImplementation((...a) => void out.push(a.join(' ')));
  vi.spyOn(console, 'error').mockImplementation((...a) => void err.push(a.join(' ')));
  const code = await main(argv);
  vi.restoreAllMocks();
  return { code, out: out.join('\n'), err: err.join('\n') };
}

afterEach(() => vi.restoreAllMocks());

describe('webmoe inspect', () => {
  it('reports the official fixture in JSON with the documented keys, the same for one file and shards', async () => {
    const single = await run('inspect', officialFixture(), '--json');
    const sharded = await run('inspect', officialFixture('sharded'), '--json');
    expect(single.code).toBe(0);
    const a = JSON.parse(single.out);
    const b = JSON.parse(sharded.out);
    for (const key of ['params_total', 'params_active', 'bytes_by_dtype', 'latent_cache_bytes_per_token', 'mha_cache_bytes_per_token', 'missing', 'unexpected']) {
      expect(a).toHaveProperty(key);
    }
    expect(a.missing).toEqual([]);
    expect(a.unexpected).toEqual([]);
    // 4 layers x (256 + 32) values x 2 bytes; per-head: 4 x 8 x (64 + 48) x 2.
    expect(a.latent_cache_bytes_per_token).toBe(4 * 288 * 2);
    expect(a.mha_cache_bytes_per_token).toBe(4 * 8 * 112 * 2);
    expect(a.bytes_by_dtype).toEqual(b.bytes_by_dtype);
    expect(a.params_total).toBe(b.params_total);
    expect(b.layout).toBe('sharded');
  });

  it('says how a BF16 release is held on the GPU in each weights mode', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'webmoe-inspect-bf16-'));
    await writeCheckpoint(dir, { config: { ...ODD, quantization_config: null }, seed: 2 });
    const r = JSON.parse((await run('inspect', dir, '--json')).out);
    expect(r.release_weights).toBe('bf16');
    expect(r.mismatched).toEqual([]);
    expect(r.gpu_weight_bytes.bf16).toBeGreaterThanOrEqual(r.bytes_total);
    expect(r.gpu_weight_bytes.fp8).toBeLessThan(0.7 * r.gpu_weight_bytes.bf16);
    expect((await run('inspect', dir)).out).toMatch(/a BF16 release \(no quantization_config\): .* quantised to FP8 at load/);
    const fp8 = JSON.parse((await run('inspect', officialFixture(), '--json')).out);
    expect(fp8.release_weights).toBe('fp8');
    expect(fp8.gpu_weight_bytes.fp8).toBe(fp8.gpu_weight_bytes.bf16);
  });

  it('plans the weights at a binding limit: split tensors and pieces, or the tensor that cannot be split', async () => {
    const r = JSON.parse((await run('inspect', officialFixture(), '--json')).out);
    expect(r.binding_limit_bytes).toBe(128 * 2 ** 20);
    expect(r.binding_plan.fp8).toMatchObject({ split: [], pieces: 0 });
    // 0.03 MiB: kv_b_proj (640 x 256, read whole) does not fit. 0.16 MiB: it does, and the
    // stacked experts (12 x 16 KiB) are split by expert ranges.
    const low = JSON.parse((await run('inspect', officialFixture(), '--json', '--max-binding-mib', '0.03')).out);
    expect(low.binding_plan.fp8.refused).toMatch(/needs a [\d,]+-byte buffer, over the largest storage binding webmoe plans with \(31,456-byte/);
    const mid = JSON.parse((await run('inspect', officialFixture(), '--json', '--max-binding-mib', '0.16')).out);
    expect(mid.binding_plan.fp8.split).toEqual(expect.arrayContaining(['model.layers.2.mlp.experts.gate_proj.weight', 'model.layers.2.mlp.experts.gate_proj.weight_scale_inv']));
    expect(mid.binding_plan.fp8.largest_buffer).toBeLessThanOrEqual(Math.floor(0.16 * 2 ** 20));
    expect((await run('inspect', officialFixture(), '--max-binding-mib', '0.16')).out).toMatch(/GPU bindings of 163\.8 KiB \(--max-binding-mib\): weights fp8: \d+ buffers, \d+ tensor\(s\) split into \d+ pieces/);
    // The smallest limit it loads with: kv_b_proj, 163,840 bytes; 4 bytes less is refused.
    expect(r.binding_plan.fp8.smallest_binding).toEqual({ bytes: 163_840, tensor: 'model.layers.0.self_attn.kv_b_proj.weight' });
    const below = JSON.parse((await run('inspect', officialFixture(), '--json', '--max-binding-mib', String((163_840 - 4) / 2 ** 20))).out);
    expect(below.binding_plan.fp8.refused).toMatch(/kv_b_proj\.weight needs a 163,840-byte buffer/);
    const at = JSON.parse((await run('inspect', officialFixture(), '--json', '--max-binding-mib', String(163_840 / 2 ** 20))).out);
    expect(at.binding_plan.fp8.largest_buffer).toBeLessThanOrEqual(163_840);
    expect((await run('inspect', officialFixture())).out).toMatch(/loads down to 0\.16 MiB bindings, set by model\.layers\.0\.self_attn\.kv_b_proj\.weight/);
    const bad = await run('inspect', officialFixture(), '--max-binding-mib', '0');
    expect(bad.code).toBe(2);
  });

  it('prints the GPU memory plan: weights, one session\'s latent cache at --max-context, plans', async () => {
    const r = JSON.parse((await run('inspect', officialFixture(), '--json')).out);
    const p = r.memory_plan.fp8;
    expect(r.memory_plan.max_context).toBe(512); // the fixture's max_position_embeddings, under the engine's 4096
    expect(p.oneSessionBytes).toBe(p.weightBytes + p.sessionCacheBytes + p.activationBytes);
    expect(p.weightBytes).toBe(r.gpu_weight_bytes.fp8);
    const short = JSON.parse((await run('inspect', officialFixture(), '--json', '--max-context', '64')).out);
    expect(short.memory_plan.fp8.sessionCacheBytes).toBeLessThan(p.sessionCacheBytes / 4);
    expect((await run('inspect', officialFixture())).out).toMatch(/GPU memory, weights fp8, one session of 512 positions \(--max-context\): [\d.]+ MiB = weights/);
    // the least it runs in: the experts offloaded, one per layer on the GPU
    expect(r.memory_plan.offloaded.offload.expertSlots).toBe(1);
    expect(r.memory_plan.offloaded.oneSessionBytes).toBeLessThan(p.oneSessionBytes);
    expect((await run('inspect', officialFixture())).out).toMatch(/GPU memory with the routed experts in CPU memory \([\d.]+ MiB\) and one per MoE layer on the GPU \(--expert-slots 1/);
  });

  it('prints a readable summary without --json', async () => {
    const r = await run('inspect', officialFixture());
    expect(r.code).toBe(0);
    expect(r.out).toContain('12 routed experts, top-6 in 3 of 4 groups');
    expect(r.out).toContain('tensors: all present, none unexpected');
  });

  it('names missing and unexpected tensors', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'webmoe-inspect-'));
    copyFileSync(officialFixture('model.safetensors'), join(dir, 'model.safetensors'));
    // One layer fewer in the config: layer 3's tensors become unexpected, the MTP layer moves to 3.
    const config = JSON.parse(readFileSync(officialFixture('config.json'), 'utf8'));
    config.num_hidden_layers = 3;
    writeFileSync(join(dir, 'config.json'), JSON.stringify(config));
    const r = await run('inspect', dir, '--json');
    expect(r.code).toBe(0);
    const report = JSON.parse(r.out);
    expect(report.unexpected).toContain('model.layers.4.enorm.weight');
    expect(report.missing).toContain('model.layers.3.enorm.weight');
  });

  it.each([
    [['inspect', '/no/such/dir'], /config\.json not found in \/no\/such\/dir/],
    [['inspect'], /expected <dir-or-url>/],
    [['inspect', '.', '--bogus'], /Unknown option '--bogus'/],
    [['frobnicate'], /unknown command "frobnicate"/],
  ])('exits 2 with one line for bad input: %j', async (argv, message) => {
    const r = await run(...argv);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(message);
    expect(r.err).not.toMatch(/\n\s+at /); // no stack trace
  });

  it('exits 2 naming the file for a truncated safetensors file', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'webmoe-inspect-'));
    copyFileSync(officialFixture('config.json'), join(dir, 'config.json'));
    const bytes = readFileSync(officialFixture('model.safetensors'));
    writeFileSync(join(dir, 'model.safetensors'), bytes.subarray(0, 5000));
    const r = await run('inspect', dir);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/model\.safetensors/);
    expect(r.err.split('\n')).toHaveLength(1);
  });

  it('exits 2 naming the key for a config the engine cannot run', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'webmoe-inspect-'));
    copyFileSync(officialFixture('model.safetensors'), join(dir, 'model.safetensors'));
    const config = JSON.parse(readFileSync(officialFixture('config.json'), 'utf8'));
    config.scoring_func = 'softmax';
    writeFileSync(join(dir, 'config.json'), JSON.stringify(config));
    const r = await run('inspect', dir);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/scoring_func/);
  });
});

/** The official fixture with `config` merged into its config.json and one more, zero-size, tensor named `extra`. */
function fixtureWith(config: Record<string, unknown>, extra: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'webmoe-inspect-hostile-'));
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...JSON.parse(readFileSync(officialFixture('config.json'), 'utf8')), ...config }));
  const file = readFileSync(officialFixture('model.safetensors'));
  const headerLength = Number(file.readBigUInt64LE(0));
  const header = JSON.parse(file.subarray(8, 8 + headerLength).toString('utf8'));
  header[extra] = { dtype: 'F32', shape: [0], data_offsets: [0, 0] };
  const text = Buffer.from(JSON.stringify(header));
  const json = Buffer.concat([text, Buffer.alloc((8 - (text.byteLength % 8)) % 8, ' ')]); // the data stays 8-byte aligned
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(json.byteLength));
  writeFileSync(join(dir, 'model.safetensors'), Buffer.concat([length, json, file.subarray(8 + headerLength)]));
  return dir;
}

describe('webmoe inspect: strings from the checkpoint reach the terminal escaped', () => {
  // An OSC sequence that sets the window title, a colour, and a name that rewrites the line above
  // and ends in C1's one-byte CSI.
  const MODEL_TYPE = '\x1b]0;pwned\x07\x1b[31mdeepseek';
  const TENSOR = 'evil\x1b[2K\x1b[1A\x1b[32m ALL GOOD\u009b';
  const CONTROL = /[\x00-\x09\x0b-\x1f\x7f-\x9f]/; // any control character but the newline

  it('text mode escapes model_type and tensor names; --json keeps them exact', async () => {
    const dir = fixtureWith({ model_type: MODEL_TYPE, architectures: ['DeepseekV3ForCausalLM'] }, TENSOR);
    const r = await run('inspect', dir);
    expect(r.code).toBe(0);
    expect(r.out).not.toMatch(CONTROL);
    expect(r.out).toContain('\\x1b]0;pwned\\x07\\x1b[31mdeepseek: hidden');
    expect(r.out).toContain('evil\\x1b[2K\\x1b[1A\\x1b[32m ALL GOOD\\x9b');
    const json = JSON.parse((await run('inspect', dir, '--json')).out);
    expect(json.config.model_type).toBe(MODEL_TYPE);
    expect(json.unexpected).toEqual([TENSOR]);
  });

  it('the one-line error escapes what it quotes from the checkpoint', async () => {
    const dir = fixtureWith({ model_type: MODEL_TYPE, architectures: [] }, 'unused');
    const r = await run('inspect', dir);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/^webmoe inspect: .*model_type.*\\x1b\]0;pwned\\x07\\x1b\[31mdeepseek/);
    expect(r.err).not.toMatch(CONTROL);
    expect(r.err.split('\n')).toHaveLength(1);
  });
});

