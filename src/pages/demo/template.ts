// Whether the checkpoint has a chat template, so that the demo knows to chat (engine.chat, which
// renders the template in the engine's Worker) or to continue plain text. The page only looks for
// the template; it never renders it (a checkpoint's template is untrusted code). The engine's
// ModelInfo does not say, so the page reads the same two small files the engine reads.

import { filesDir, MissingFileError, urlDir, type CheckpointDir } from './lib.ts';

export async function hasChatTemplate(model: string | ArrayLike<File>, signal?: AbortSignal): Promise<boolean> {
  const dir = typeof model === 'string' ? urlDir(model) : filesDir(model);
  const [configText, jinja] = await Promise.all([readIfThere(dir, 'tokenizer_config.json', signal), readIfThere(dir, 'chat_template.jinja', signal)]);
  return jinja !== undefined || (configText !== undefined && mentionsTemplate(configText));
}

async function readIfThere(dir: CheckpointDir, file: string, signal?: AbortSignal): Promise<string | undefined> {
  try {
    return await dir.readText(file, signal);
  } catch (err) {
    if (err instanceof MissingFileError) return undefined;
    throw err;
  }
}

/** Whether tokenizer_config.json has a chat_template (a file that is not JSON: the engine says what is wrong when asked to chat). */
function mentionsTemplate(configText: string): boolean {
  try {
    const template = (JSON.parse(configText) as { chat_template?: unknown }).chat_template;
    return template !== undefined && template !== null;
  } catch {
    return true;
  }
}
