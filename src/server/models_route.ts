// GET /v1/models (and /v1/models/{id}): the one model this server serves. `owned_by: "webmoe"`
// tells a remote engine who answers; `max_model_len` is the context, as vLLM reports it; the
// `webmoe` field describes the model as the engine loaded it (a remote engine's info).

import type { WireModel, WireModelList } from '../remote/wire.ts';
import type { Engine } from '../runtime/types.ts';
import { modelNotFound, sendJson, type Route } from './route.ts';

/** When the server started: the `created` of its model. */
const started = Math.floor(Date.now() / 1000);

async function modelCard(engine: Engine, modelId: string): Promise<WireModel> {
  // The served name, not the checkpoint's folder: a path on this machine is none of the client's business.
  const { backend: _, ...info } = engine.info;
  const { limits } = await engine.stats();
  return { id: modelId, object: 'model', created: started, owned_by: 'webmoe', max_model_len: limits.maxContext, webmoe: { info: { ...info, name: modelId } } };
}

export const listModels: Route = async ({ res, engine, modelId }) => {
  const list: WireModelList = { object: 'list', data: [await modelCard(engine, modelId)] };
  sendJson(res, 200, list);
};

export const retrieveModel: Route = async ({ res, engine, modelId, tail }) => {
  const id = decodeURIComponent(tail ?? '');
  if (id !== modelId) throw modelNotFound(id, modelId);
  sendJson(res, 200, await modelCard(engine, modelId));
};
