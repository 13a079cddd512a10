// Offloaded experts (src/model/expert_offload.ts) give the all-resident logits bit for bit: every
// position, prefill (grouped experts over passes) and decode (decode_pairs over passes), on FP8,
// BF16 quantised at load on the CPU and BF16 kept, at one slot per layer (every step runs a
// layer in num_experts_per_tok passes and uploads nearly every expert) and at 4 of 6 (hits and
// evictions). With MTP: the same drafts and verify ids. Also the counters and the refusals.
import { beforeAll, describe, expect, it } from 'vitest';
import { ArgumentError, CheckpointError, FetchError, GpuLimitError, GpuOutOfMemoryError, UnsupportedConfigError } from '../errors.ts';
import type { CheckpointDir } from '../io/sources.ts';
import { trackingDevice } from '../testing/tracking_device.ts';
import type { Gpu } from '../gpu/device.ts';
import { testGpu } from '../gpu/testing.ts';
import { memoryDir } from '../io/sources.ts';
import { openCheckpoint } from '../io/checkpoint_files.ts';
import { generateCheckpoint } from '../../tools/checkpoint/generate.ts';
import { ODD } from '../../tools/checkpoint/presets.ts';
import { createGpuModel, type GpuModel } from './gpu_model.ts';
import type { ModelNumerics } from './model_kernels.ts';
import { loadWeights, type LoadWeightsOptions, type WeightMode } from './load_weights.ts';
import { logitsAtEveryPosition } from '../testing/logits_testing.ts';
import { nodeDir } from '../io/node_source.ts';
import { officialFixture, officialReference } from '../testing/fixtures.ts';

const releases = {
  fp8: memoryDir('offload-fp8', Object.fromEntries(generateCheckpoint({ config: ODD, seed: 15 }).files)),
  bf16: memoryDir('offload-bf16', Object.fromEntries(generateCheckpoint({ config: { ...ODD, quantization_config: null }, seed: 16 }).files)),
  official: nodeDir(officialFixture()), // DeepSeek's official code's outputs beside it
};
const ids = Array.from({ length: 12 }, (_, t) => (t * 61 + 5) % 301); // ODD's vocab_size is 301
const PREFILLED = 9; // a chunk of 8 rows and one of 1, then 3 decode steps
const GREEDY = { temperature: 0, topK: 0, topP: 1, seed: 0, step: 0 };

let gpu: Gpu;
beforeAll(async () => {
  gpu = await testGpu();
});

async function withModel<T>(release: keyof typeof releases, options: LoadWeightsOptions, f: (model: GpuModel) => Promise<T>, numerics?: ModelNumerics): Promise<T> {
  const loaded = await loadWeights(gpu, releases[release], options);
  try {
    const model = createGpuModel(gpu, loaded, { prefillChunk: 8, numerics });
    try {
      return await f(model);
    } finally {
      model.destroy();
    }
  } finally {
    loaded.destroy();
  }
}

const bits = (rows: Float32Array[]) => rows.map((r) => Array.from(new Uint32Array(r.buffer, r.byteOffset, r.length)));

/** Prefill with MTP drafting, then verify steps: the ids and drafts of each. */
async function speculate(model: GpuModel): Promise<unknown[]> {
  const cache = model.createCache(ids.length + 4);
  const plans = model.plans(cache);
  try {
    const out: unknown[] = [];
    const first = await model.forward(plans, ids.slice(0, PREFILLED), 0, { sample: GREEDY, mtp: true });
    out.push(first.id, first.draft);
    let pos = PREFILLED;
    let current = first.id!;
    let draft = first.draft!;
    for (let step = 0; step < 2; step++) {
      const v = await model.verify(plans, current, draft, pos, { ...GREEDY, step });
      out.push(...v.ids, ...v.drafts);
      // the caller's rule: accepted drafts move two positions (the cache rows stay as written here)
      pos += 2;
      current = v.ids[1];
      draft = v.drafts[1] ?? 0;
    }
    return out;
  } finally {
    plans.destroy();
    cache.destroy();
  }
}

const CASES: { release: keyof typeof releases; weights: WeightMode }[] = [
  { release: 'fp8', weights: 'fp8' },
  { release: 'bf16', weights: 'fp8' },
  { release: 'bf16', weights: 'bf16' },
];

describe.each(CASES)('a $release release, weights $weights, experts offloaded', ({ release, weights }) => {
  let resident: { rows: Float32Array[]; speculated: unknown[] };
  beforeAll(async () => {
    resident = await withModel(release, { weights }, async (model) => ({ rows: await logitsAtEveryPosition(model, ids, PREFILLED), speculated: await speculate(model) }));
  });

  it.each([1, 4])('at %i slots per layer gives the resident logits bit for bit, and the same MTP drafts and verify ids', async (expertSlots) => {
    await withModel(release, { weights, expertSlots }, async (model) => {
      const offload = model.offload!;
      expect(offload.slots).toBe(expertSlots);
      // layers 1, 2 and the MTP layer 3
      expect([...offload.caches.keys()]).toEqual([1, 2, 3]);
      expect(bits(await logitsAtEveryPosition(model, ids, PREFILLED))).toEqual(bits(resident.rows));
      expect(await speculate(model)).toEqual(resident.speculated);
      const { hits, misses, uploadedBytes, extraPasses } = offload.counters;
      const expertBytes = offload.hosts.get(1)!.expertBytes;
      expect(uploadedBytes).toBe(misses * expertBytes);
      if (expertSlots === 1) {
        expect(extraPasses).toBeGreaterThan(0); // 3 experts a token, one slot
      } else {
        expect(hits).toBeGreaterThan(0);
        expect(misses).toBeGreaterThan(6);
      }
    });
  });
});

/** `dir` whose file reads fail while `failing.on` (a link that drops mid-generation). */
function flakyDir(dir: CheckpointDir, failing: { on: boolean }): CheckpointDir {
  return {
    ...dir,
    async open(file, signal) {
      const source = await dir.open(file, signal);
      return {
        name: source.name,
        size: () => source.size(),
        read: (offset, length, s) => (failing.on ? Promise.reject(new FetchError(file, "the connection dropped (simulated)")) : source.read(offset, length, s)),
      };
    },
  };
}

describe("experts read from the checkpoint at each miss (expertStore 'checkpoint')", () => {
  const fp8Resident = async () => withModel('fp8', {}, (model) => logitsAtEveryPosition(model, ids, PREFILLED));

  it.each([['fp8', 'fp8'], ['bf16', 'bf16']] as const)('a %s release held %s: the resident logits bit for bit at one slot, nothing in CPU memory', async (release, weights) => {
    const want = await withModel(release, { weights }, (model) => logitsAtEveryPosition(model, ids, PREFILLED));
    await withModel(release, { weights, expertSlots: 1, expertStore: 'checkpoint' }, async (model) => {
      expect(model.offload!.hostBytes).toBe(0);
      expect(bits(await logitsAtEveryPosition(model, ids, PREFILLED))).toEqual(bits(want));
      expect(model.offload!.counters.misses).toBeGreaterThan(0);
    });
  });

  it("refuses a BF16 release held as FP8 (each read would need quantising), before allocating", async () => {
    const { device, made } = trackingDevice(gpu.device);
    const error = await loadWeights({ ...gpu, device }, releases.bf16, { expertSlots: 2, expertStore: 'checkpoint' }).catch((e) => e);
    expect(error).toBeInstanceOf(UnsupportedConfigError);
    expect(error.message).toContain("expertStore 'memory'");
    expect(made).toHaveLength(0);
  });

  it('a NaN block scale read at a miss is the loader\'s CheckpointError, naming the tensor', async () => {
    const files = Object.fromEntries(generateCheckpoint({ config: ODD, seed: 17 }).files);
    const name = 'model.layers.1.mlp.experts.0.gate_proj.weight_scale_inv';
    const t = (await openCheckpoint(memoryDir('nan-scale', files))).tensors.get(name)!;
    new DataView(files[t.file].buffer, files[t.file].byteOffset).setFloat32(t.byteOffset, Number.NaN, true);
    const loaded = await loadWeights(gpu, memoryDir('nan-scale', files), { expertSlots: 6, expertStore: 'checkpoint' });
    try {
      const model = createGpuModel(gpu, loaded, { prefillChunk: 8 });
      try {
        const error = await logitsAtEveryPosition(model, ids, PREFILLED).catch((e) => e);
        expect(error).toBeInstanceOf(CheckpointError);
        expect(error.message).toContain(`${name} holds a NaN or infinite value at element 0`);
      } finally {
        model.destroy();
      }
    } finally {
      loaded.destroy();
    }
  });

  it('a failed read fails the step with its typed error, and the next step uploads that expert again', async () => {
    const want = await fp8Resident();
    const failing = { on: false };
    const loaded = await loadWeights(gpu, flakyDir(releases.fp8, failing), { expertSlots: 2, expertStore: 'checkpoint' });
    try {
      const model = createGpuModel(gpu, loaded, { prefillChunk: 8 });
      try {
        failing.on = true;
        await expect(logitsAtEveryPosition(model, ids, PREFILLED)).rejects.toThrow(FetchError);
        failing.on = false;
        expect(bits(await logitsAtEveryPosition(model, ids, PREFILLED))).toEqual(bits(want));
      } finally {
        model.destroy();
      }
    } finally {
      loaded.destroy();
    }
  });
});

describe('the official fixture (dsv3-tiny-official), one routed expert per layer on the GPU', () => {
  it('matches the official prefill logits and greedy tokens', async () => {
    const official = officialReference<{ modes: { f32_dequant: { prompts: { prompt: number[]; prefill_logits: number[][]; greedy: { tokens: number[] } }[] } } }>().modes.f32_dequant.prompts[0];
    await withModel('official', { expertSlots: 1 }, async (model) => {
      const cache = model.createCache(official.prompt.length + official.greedy.tokens.length);
      const plans = model.plans(cache);
      try {
        const { logits, id } = await model.forward(plans, official.prompt, 0, { logits: 'all', sample: GREEDY });
        let err = 0;
        logits!.forEach((row, r) => row.forEach((v, j) => (err = Math.max(err, Math.abs(v - official.prefill_logits[r][j])))));
        expect(err).toBeLessThan(1e-4);
        const tokens = [id!];
        for (let t = 1; t < official.greedy.tokens.length; t++) tokens.push((await model.forward(plans, [tokens[t - 1]], official.prompt.length + t - 1, { sample: { ...GREEDY, step: t } })).id!);
        expect(tokens).toEqual(official.greedy.tokens);
        expect(model.offload!.counters.extraPasses).toBeGreaterThan(0);
      } finally {
        plans.destroy();
        cache.destroy();
      }
    });
  });
});

describe('the official fixture on the W8A8 path (activations rounded to FP8), experts offloaded', () => {
  it('gives the resident W8A8 logits bit for bit at 2 of 12 slots', async () => {
    const fixtureIds = ids.map((id) => id % 100);
    const want = await withModel('official', {}, (model) => logitsAtEveryPosition(model, fixtureIds, PREFILLED), 'w8a8');
    const got = await withModel('official', { expertSlots: 2 }, (model) => logitsAtEveryPosition(model, fixtureIds, PREFILLED), 'w8a8');
    expect(bits(got)).toEqual(bits(want));
  });
});

describe('expert offload refusals', () => {
  it('refuses expertSlots outside [1, n_routed_experts] before allocating', async () => {
    for (const expertSlots of [0, 7, 1.5]) {
      await expect(loadWeights(gpu, releases.fp8, { expertSlots })).rejects.toThrow(ArgumentError);
    }
  });

  it('refuses a cache whose buffers exceed the binding limit, saying how many slots fit', async () => {
    // an FP8 routed expert's gate_proj is 136 x 200 bytes: 27,200 per slot
    const error = await loadWeights(gpu, releases.fp8, { expertSlots: 3, maxBindingBytes: 60_000 }).catch((e) => e);
    expect(error).toBeInstanceOf(GpuLimitError);
    expect(error.message).toContain('at most 2 fit');
  });

  /** `device` as if the GPU had no memory for an expert cache of more than `most` slots (an out-of-memory error scope). */
  const outOfMemoryAbove = (device: GPUDevice, most: number): GPUDevice => {
    let failing = false;
    return new Proxy(device, {
      get(target, prop) {
        if (prop === 'createBuffer') {
          return (desc: GPUBufferDescriptor) => {
            const slots = /\(cache of (\d+)\)/.exec(desc.label ?? '');
            if (slots && Number(slots[1]) > most) failing = true;
            return target.createBuffer(desc);
          };
        }
        if (prop === 'popErrorScope') {
          // withGpuErrorScope pops the out-of-memory scope first
          return async () => {
            const real = await target.popErrorScope();
            if (!failing) return real;
            failing = false;
            return { message: 'out of memory (simulated)' };
          };
        }
        const v = Reflect.get(target, prop);
        return typeof v === 'function' ? v.bind(target) : v;
      },
    });
  };

  it('halves the expert caches where the GPU is out of memory for them, down to one slot, leaking nothing', async () => {
    const { device, made } = trackingDevice(gpu.device);
    const loaded = await loadWeights({ ...gpu, device: outOfMemoryAbove(device, 2) }, releases.fp8, { expertSlots: 5 });
    expect(loaded.offload!.slots).toBe(2); // 5 refused, then 2
    const refused = made.filter((b) => b.label.includes('(cache of 5)'));
    expect(refused.length).toBeGreaterThan(0);
    expect(refused.every((b) => b.destroyed)).toBe(true);
    loaded.destroy();
    expect(made.every((b) => b.destroyed)).toBe(true);

    const none = trackingDevice(gpu.device);
    const error = await loadWeights({ ...gpu, device: outOfMemoryAbove(none.device, 0) }, releases.fp8, { expertSlots: 4 }).catch((e) => e);
    expect(error).toBeInstanceOf(GpuOutOfMemoryError);
    expect(error.message).toContain('expert caches');
    expect(none.made.every((b) => b.destroyed)).toBe(true);
  });

  it("an offloaded model's plan cannot be recorded into one encoder", async () => {
    await withModel('fp8', { expertSlots: 2 }, async (model) => {
      const cache = model.createCache(4);
      const plans = model.plans(cache);
      try {
        const encoder = gpu.device.createCommandEncoder();
        expect(() => plans.get(1, 'last').encode(encoder, { ids: [3], startPos: 0 })).toThrow(ArgumentError);
        encoder.finish();
      } finally {
        plans.destroy();
        cache.destroy();
      }
    });
  });
});
