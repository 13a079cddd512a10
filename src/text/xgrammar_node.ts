// The grammar library in Node (see xgrammar.ts): its UMD file run as CommonJS runs it, in a
// function (vm.compileFunction) with `exports`, `module`, `require`, `__filename` and `__dirname`
// (what Node's own CommonJS wrapper passes), so that the UMD header finds a CommonJS module and
// the emscripten glue instantiates the inlined WebAssembly. Its `console` is ours too, so that
// the reason of a fatal error (an unsupported schema: "[FATAL] ... Unsupported type") reaches the
// GrammarError's message instead of the server's stderr.

import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import { compileFunction } from 'node:vm';
import type { GrammarLibrary, GrammarLibraryLoader, Xgrammar } from './xgrammar.ts';

// One instance per process: the library holds no request state of its own (compilers and
// matchers are objects the engine makes and frees).
let loaded: Promise<GrammarLibrary> | undefined;

export const nodeGrammarLibrary: GrammarLibraryLoader = () => (loaded ??= Promise.resolve().then(evaluate));

function evaluate(): GrammarLibrary {
  const file = createRequire(import.meta.url).resolve('@mlc-ai/web-xgrammar');
  const source = readFileSync(file, 'utf8');
  let lastError: string | undefined;
  const libraryConsole = Object.create(console) as Console;
  libraryConsole.error = (...parts: unknown[]) => {
    const text = parts.map(String).join(' ');
    // "Aborted()" follows the reason; keep the reason.
    if (!/^Aborted\(/.test(text)) lastError = text.replace(/^\[FATAL\]\s*\S+:\d+:\s*/, '');
  };
  const module = { exports: {} as Record<string, unknown> };
  // `process` undefined: the glue then skips its Node branch, which would import('module')
  // dynamically (refused in a vm function without an experimental flag) only to read files it
  // does not need: the WebAssembly is inlined as a data URI, decoded with atob.
  const run = compileFunction(source, ['exports', 'module', 'require', '__filename', '__dirname', 'console', 'process'], { filename: file });
  run(module.exports, module, createRequire(file), file, dirname(file), libraryConsole, undefined);
  return {
    xgrammar: module.exports as unknown as Xgrammar,
    takeLastError() {
      const message = lastError;
      lastError = undefined;
      return message;
    },
  };
}
