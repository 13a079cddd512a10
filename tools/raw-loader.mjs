// Node loader hook: `import text from './x.wgsl?raw'` gives the file's text, as Vite does in the
// browser build and in vitest. Lets the CLI and benchmarks run the same sources under tsx.
import { readFile } from 'node:fs/promises';

export async function load(url, context, nextLoad) {
  if (url.startsWith('file:') && url.endsWith('?raw')) {
    const text = await readFile(new URL(url.slice(0, -'?raw'.length)), 'utf8');
    return { format: 'module', shortCircuit: true, source: `export default ${JSON.stringify(text)};` };
  }
  return nextLoad(url, context);
}
