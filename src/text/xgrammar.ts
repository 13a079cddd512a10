// The grammar library (@mlc-ai/web-xgrammar, the one WebLLM uses): how the engine gets it. Its
// emscripten glue is a UMD file with the WebAssembly inlined. A bundler (vite, for the page and
// the engine's Worker) turns it into a module, so the browser imports the package; Node's ESM
// loader cannot run it as it is (it looks for `require` and `__filename` when there is no
// `document`), so Node uses xgrammar_node.ts, which the Node entry passes to the engine.

export type Xgrammar = typeof import('@mlc-ai/web-xgrammar');

export interface GrammarLibrary {
  xgrammar: Xgrammar;
  /**
   * The message of the library's last fatal error (it aborts with a bare "Aborted()" and prints
   * the reason), and clears it; undefined where the loader cannot see the library's output.
   */
  takeLastError(): string | undefined;
}

/** Loads the library once per engine (the engine calls it on its first structured-output request). */
export type GrammarLibraryLoader = () => Promise<GrammarLibrary>;

/** The bundler's way: the package imported as a module (browser, Worker). */
export const importGrammarLibrary: GrammarLibraryLoader = async () => {
  const mod = (await import('@mlc-ai/web-xgrammar')) as Xgrammar & { default?: Xgrammar };
  // A CommonJS-shaped module may come as its default export only.
  const xgrammar = 'GrammarCompiler' in mod && mod.GrammarCompiler ? mod : mod.default!;
  return { xgrammar, takeLastError: () => undefined };
};
