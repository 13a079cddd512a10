// A remote engine's ModelInfo. webmoe serve describes its model in GET /v1/models (the `webmoe`
// field: the config and what the engine derived); vLLM and SGLang do not, so the caller may give
// the checkpoint's config.json (createRemoteEngine's `config`) and the rest is derived from it as
// the local engine derives it. With neither, the fields that need the config throw
// RemoteUnsupportedError when read, rather than hold made-up values.

import { isMoeLayer, parseConfig, type DeepseekV3Config } from '../config.ts';
import { RemoteUnsupportedError } from '../errors.ts';
import { countParameters } from '../model/weights.ts';
import type { EngineBackend, ModelInfo } from '../runtime/types.ts';
import type { WireModel } from './wire.ts';

type Described = Omit<ModelInfo, 'name' | 'backend'>;

/** The config-derived part of the info, as runtime/engine.ts computes it for a loaded model. */
export function describeConfig(config: DeepseekV3Config): Described {
  const hasMtp = config.mtp_layer_index !== null;
  const cacheLayers = config.num_hidden_layers + (hasMtp ? 1 : 0);
  return {
    config,
    parameters: countParameters(config).total,
    hasMtp,
    // What the checkpoint stores: an FP8 release is served in FP8, a BF16 one in BF16.
    weights: config.quantization_config ? 'fp8' : 'bf16',
    moeLayers: Array.from({ length: config.num_hidden_layers }, (_, i) => i).filter((i) => isMoeLayer(config, i)),
    cacheBytesPerToken: {
      latent: 4 * config.latent_cache_dim * cacheLayers,
      mha: 4 * config.num_attention_heads * (config.qk_head_dim + config.v_head_dim) * cacheLayers,
    },
  };
}

/**
 * `card`: the server's /v1/models entry of the model; `config`: config.json as the caller gave it
 * (text or parsed JSON), checked as a local load checks it.
 */
export function remoteInfo(card: WireModel, backend: Extract<EngineBackend, { kind: 'remote' }>, config: string | object | undefined): ModelInfo {
  const where = `${backend.baseURL} (${backend.model})`;
  let described: Described | undefined;
  if (config !== undefined) {
    described = describeConfig(parseConfig(typeof config === 'string' ? config : JSON.stringify(config), `config.json given for ${where}`));
  } else if (card.webmoe?.info?.config) {
    // webmoe serve's own description: its config is checked again, the derived fields kept.
    const served = card.webmoe.info;
    described = { ...served, config: parseConfig(JSON.stringify(served.config), `the config served by ${where}`) };
  }
  const info: ModelInfo = { name: card.id, backend } as ModelInfo;
  if (described) return Object.freeze({ ...info, ...described });
  const unknown = (field: string) => () => {
    throw new RemoteUnsupportedError(
      `info.${field}`,
      `info.${field} is unknown: ${backend.server} at ${backend.baseURL} does not describe its model's config; pass the checkpoint's config.json as createRemoteEngine({ config })`,
    );
  };
  for (const field of ['config', 'parameters', 'hasMtp', 'weights', 'moeLayers', 'cacheBytesPerToken'] as const) {
    Object.defineProperty(info, field, { get: unknown(field), enumerable: false });
  }
  return Object.freeze(info);
}
