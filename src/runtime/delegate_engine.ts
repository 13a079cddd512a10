// An Engine that forwards every member to another, but those it is given: the wrappers that add
// to an engine (createEngine's info.backend, the tests' recording engines) change one or two
// members and must forward the rest, whatever the interface grows.

import type { Engine } from './types.ts';

export function delegateEngine(engine: Engine, overrides: Partial<Engine> = {}): Engine {
  return {
    info: engine.info,
    chat: engine.chat,
    generate: (prompt, options) => engine.generate(prompt, options),
    tokenize: (text, options) => engine.tokenize(text, options),
    detokenize: (ids) => engine.detokenize(ids),
    logits: (ids, options) => engine.logits(ids, options),
    createSession: () => engine.createSession(),
    closeSession: (session) => engine.closeSession(session),
    stats: () => engine.stats(),
    unload: () => engine.unload(),
    ...overrides,
  };
}
