// The checkpoint's chat template, read by the page from the same place as the weights (the engine
// in the Worker has its own copy): the page renders each turn's text with it (conversation.ts).
// A checkpoint without tokenizer_config.json has none, and the demo continues plain text instead.

import { filesDir, loadChatTemplate, MissingFileError, urlDir, type ChatTemplate, type CheckpointDir } from './lib.ts';

/** The template, or undefined when the checkpoint has no tokenizer_config.json or no chat_template in it. */
export async function loadTemplate(model: string | ArrayLike<File>, signal?: AbortSignal): Promise<ChatTemplate | undefined> {
  const dir = typeof model === 'string' ? urlDir(model) : filesDir(model);
  const [configText, jinja] = await Promise.all([readIfThere(dir, 'tokenizer_config.json', signal), readIfThere(dir, 'chat_template.jinja', signal)]);
  if (configText === undefined || (jinja === undefined && !mentionsTemplate(configText))) return undefined;
  return loadChatTemplate({ tokenizerConfigJson: configText, chatTemplate: jinja, source: dir.description });
}

async function readIfThere(dir: CheckpointDir, file: string, signal?: AbortSignal): Promise<string | undefined> {
  try {
    return await dir.readText(file, signal);
  } catch (err) {
    if (err instanceof MissingFileError) return undefined;
    throw err;
  }
}

/** Whether the JSON has a chat_template (a file that is not JSON counts: loadChatTemplate says what is wrong). */
function mentionsTemplate(configText: string): boolean {
  try {
    return (JSON.parse(configText) as { chat_template?: unknown }).chat_template !== undefined;
  } catch {
    return true;
  }
}
