import { officialFixture } from '../testing/fixtures.ts';
import { closeSync, openSync, readFileSync, readSync, statSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../config.ts';
import { CheckpointError } from '../errors.ts';
import { parseSafetensorsHeader } from '../io/safetensors.ts';
import { DEEPSEEK_V3_671B, TINY } from '../../tools/checkpoint/presets.ts';
import {
  assertTensors,
  checkTensors,
  countParameters,
  expectedTensors,
  latentCacheBytesPerToken,
  mhaCacheBytesPerToken,
  type ActualTensor,
} from './weights.ts';

const FIXTURE = officialFixture();
const fixtureConfig = parseConfig(readFileSync(`${FIXTURE}/config.json`, 'utf8'));

/** name -> {dtype, shape} from a safetensors file's header (reads only the header). */
function headerOf(path: string): Map<string, ActualTensor> {
  const fd = openSync(path, 'r');
  try {
    const first8 = new Uint8Array(8);
    readSync(fd, first8, 0, 8, 0);
    const n = Number(new DataView(first8.buffer).getBigUint64(0, true));
    const bytes = new Uint8Array(8 + n);
    readSync(fd, bytes, 0, 8 + n, 0);
    const header = parseSafetensorsHeader(bytes, path, statSync(path).size);
    return new Map([...header.tensors].map(([name, t]) => [name, { dtype: t.dtype, shape: t.shape }]));
  } finally {
    closeSync(fd);
  }
}

const fixtureTensors = headerOf(`${FIXTURE}/model.safetensors`);

function config(changes: Record<string, unknown>) {
  return parseConfig({ ...TINY, ...changes });
}

describe('expectedTensors', () => {
  it('matches the 331 tensors of the fixture exactly', () => {
    const expected = expectedTensors(fixtureConfig);
    expect(expected.size).toBe(331);
    expect(checkTensors(expected, fixtureTensors)).toEqual({ missing: [], unexpected: [], mismatched: [] });
    // Exact release dtypes too, not just accepted ones.
    const release = { fp8: 'F8_E4M3', bf16: 'BF16', f32: 'F32' };
    for (const [name, t] of expected) expect(fixtureTensors.get(name)!.dtype, name).toBe(release[t.dtype]);
  });

  it('matches the sharded fixture, whose weight and scale_inv may sit in different files', () => {
    const index = JSON.parse(readFileSync(`${FIXTURE}/sharded/model.safetensors.index.json`, 'utf8'));
    const all = new Map<string, ActualTensor>();
    for (const file of new Set<string>(Object.values(index.weight_map))) {
      for (const [name, t] of headerOf(`${FIXTURE}/sharded/${file}`)) all.set(name, t);
    }
    expect(checkTensors(expectedTensors(fixtureConfig), all)).toEqual({ missing: [], unexpected: [], mismatched: [] });
  });

  it('lists each FP8 weight followed by its block scales, partial edge blocks rounded up', () => {
    const expected = expectedTensors(fixtureConfig);
    const names = [...expected.keys()];
    for (const [i, name] of names.entries()) {
      if (expected.get(name)!.dtype === 'fp8') expect(names[i + 1]).toBe(`${name}_scale_inv`);
    }
    expect(expected.get('model.layers.0.self_attn.kv_a_proj_with_mqa.weight')!.shape).toEqual([288, 128]);
    expect(expected.get('model.layers.0.self_attn.kv_a_proj_with_mqa.weight_scale_inv')!.shape).toEqual([3, 1]);
    expect(expected.get('model.layers.4.eh_proj.weight')).toEqual({ shape: [128, 256], dtype: 'bf16', kind: 'linear', blockScaled: false });
    expect(expected.has('model.layers.4.eh_proj.weight_scale_inv')).toBe(false);
    expect(names[0]).toBe('model.embed_tokens.weight');
  });

  it('expects the same Linears in BF16 without scales in a release without quantization_config', () => {
    const fp8 = expectedTensors(fixtureConfig);
    const bf16 = expectedTensors(config({ quantization_config: null }));
    for (const [name, t] of fp8) {
      if (t.kind === 'scale_inv') expect(bf16.has(name)).toBe(false);
      else if (t.dtype === 'fp8') expect(bf16.get(name)).toEqual({ ...t, dtype: 'bf16', blockScaled: true });
      else expect(bf16.get(name)).toEqual(t);
    }
    expect(bf16.size).toBe([...fp8.values()].filter((t) => t.kind !== 'scale_inv').length);
    // Only the Linears the FP8 release quantises are block-scaled: not eh_proj, router or head.
    expect([...bf16].filter(([, t]) => t.blockScaled).every(([n]) => /(self_attn|mlp)\..*proj(_with_mqa)?\.weight$/.test(n) && !n.endsWith('mlp.gate.weight'))).toBe(true);
  });

  it('has a plain q_proj when q_lora_rank is null', () => {
    const expected = expectedTensors(config({ q_lora_rank: null }));
    expect(expected.get('model.layers.0.self_attn.q_proj.weight')).toMatchObject({ shape: [8 * 64, 128], dtype: 'fp8' });
    expect(expected.get('model.layers.0.self_attn.q_proj.weight_scale_inv')!.shape).toEqual([4, 1]);
    const names = [...expected.keys()];
    expect(names.filter((n) => /q_a_proj|q_b_proj|q_a_layernorm/.test(n))).toEqual([]);
    expect(names.filter((n) => n.endsWith('q_proj.weight'))).toHaveLength(5); // 4 layers + MTP
  });

  it('follows num_nextn_predict_layers, moe_layer_freq and n_shared_experts', () => {
    const noMtp = [...expectedTensors(config({ num_nextn_predict_layers: 0 })).keys()];
    expect(noMtp.filter((n) => n.startsWith('model.layers.4.'))).toEqual([]);
    // Layers >= first_k_dense_replace (2) with L % 2 == 0 are MoE: 2 and the MTP layer 4; 3 is dense.
    const every2 = expectedTensors(config({ moe_layer_freq: 2 }));
    expect(every2.has('model.layers.2.mlp.gate.weight')).toBe(true);
    expect(every2.get('model.layers.3.mlp.gate_proj.weight')!.shape).toEqual([384, 128]);
    expect(every2.has('model.layers.4.mlp.experts.11.down_proj.weight')).toBe(true);
    const noShared = [...expectedTensors(config({ n_shared_experts: 0 })).keys()];
    expect(noShared.filter((n) => n.includes('shared_experts'))).toEqual([]);
  });
});

describe('checkTensors', () => {
  const expected = expectedTensors(fixtureConfig);

  it('reports missing, unexpected and mismatched tensors', () => {
    const actual = new Map(fixtureTensors);
    actual.delete('model.layers.3.mlp.experts.5.up_proj.weight_scale_inv');
    actual.delete('lm_head.weight');
    actual.set('model.layers.0.self_attn.rotary_emb.inv_freq', { dtype: 'F32', shape: [16] });
    actual.set('model.layers.0.self_attn.o_proj.weight', { dtype: 'F8_E4M3', shape: [384, 128] });
    actual.set('model.layers.1.mlp.up_proj.weight', { dtype: 'BF16', shape: [384, 128] });
    actual.set('model.layers.2.mlp.gate.e_score_correction_bias', { dtype: 'BF16', shape: [12] });
    const result = checkTensors(expected, actual);
    expect(result.missing).toEqual(['model.layers.3.mlp.experts.5.up_proj.weight_scale_inv', 'lm_head.weight']); // module order
    expect(result.unexpected).toEqual(['model.layers.0.self_attn.rotary_emb.inv_freq']);
    expect(result.mismatched.map((m) => m.name)).toEqual([
      'model.layers.0.self_attn.o_proj.weight', // transposed
      'model.layers.1.mlp.up_proj.weight', // an FP8 weight must be F8_E4M3
      'model.layers.2.mlp.gate.e_score_correction_bias', // F32 only
    ]);
    expect(result.mismatched[0]).toEqual({
      name: 'model.layers.0.self_attn.o_proj.weight',
      expected: { dtype: 'fp8', shape: [128, 384] },
      actual: { dtype: 'F8_E4M3', shape: [384, 128] },
    });
  });

  it('accepts F16 and F32 in place of BF16', () => {
    const actual = new Map(fixtureTensors);
    actual.set('model.norm.weight', { dtype: 'F32', shape: [128] });
    actual.set('lm_head.weight', { dtype: 'F16', shape: [320, 128] });
    expect(checkTensors(expected, actual).mismatched).toEqual([]);
  });

  it('assertTensors throws a CheckpointError naming the tensors', () => {
    expect(() => assertTensors(expected, fixtureTensors, 'model.safetensors')).not.toThrow();
    const actual = new Map(fixtureTensors);
    actual.delete('model.norm.weight');
    actual.set('model.layers.9.foo', { dtype: 'F32', shape: [1] });
    let err: unknown;
    try {
      assertTensors(expected, actual, 'model.safetensors');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CheckpointError);
    expect((err as Error).message).toContain('model.norm.weight');
    expect((err as Error).message).toContain('model.layers.9.foo');
    expect((err as Error).message).toContain('model.safetensors');
  });
});

describe('countParameters', () => {
  it('counts the fixture header elements, MTP apart, block scales excluded', () => {
    let main = 0;
    let mtp = 0;
    for (const [name, t] of fixtureTensors) {
      if (name.endsWith('_scale_inv')) continue;
      const n = t.shape.reduce((a, b) => a * b, 1);
      if (name.startsWith('model.layers.4.')) mtp += n;
      else main += n;
    }
    const count = countParameters(fixtureConfig);
    expect(count.total).toBe(main);
    expect(count.mtp).toBe(mtp);
    // Unchosen: 2 MoE layers x (12 - 6) experts x 3 x 128 x 128; the embedding table: 320 x 128.
    expect(count.activePerToken).toBe(main - 2 * 6 * 3 * 128 * 128 - 320 * 128);
  });

  it('gives the paper figures for the 671B config: 671B total, 37B active, 685B with MTP', () => {
    const count = countParameters(parseConfig(DEEPSEEK_V3_671B));
    expect(Math.abs(count.total / 671e9 - 1)).toBeLessThan(0.005);
    expect(Math.abs(count.activePerToken / 37e9 - 1)).toBeLessThan(0.015);
    expect(Math.abs((count.total + count.mtp) / 685e9 - 1)).toBeLessThan(0.005);
  });
});

describe('cache sizes', () => {
  it('compares the latent cache with per-head caching (V3: 576 vs 40,960 values per layer)', () => {
    const c = parseConfig(DEEPSEEK_V3_671B);
    expect(latentCacheBytesPerToken(c, 2)).toBe(61 * 576 * 2);
    expect(mhaCacheBytesPerToken(c, 2)).toBe(61 * 128 * (192 + 128) * 2);
    expect(latentCacheBytesPerToken(fixtureConfig, 4)).toBe(4 * 288 * 4);
  });
});
