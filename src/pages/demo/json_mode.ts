// JSON mode: the switch and the schema box of the chat settings, read into the engine's
// response_format (a JSON Schema, or any JSON object when the box is empty), and the parsed
// object shown beside the reply, or why the reply is not one (a reply cut at max tokens).

import { ArgumentError, type FinishReason, type ResponseFormat } from './lib.ts';
import { $, el } from './dom.ts';

/** The box's example: bounded strings and numbers, so that even a tiny model completes it. */
export const EXAMPLE_SCHEMA = {
  type: 'object',
  properties: {
    name: { type: 'string', maxLength: 20 },
    age: { type: 'integer', minimum: 0, maximum: 120 },
    tribe: { enum: ['Judah', 'Levi', 'Benjamin'] },
  },
  required: ['name', 'age', 'tribe'],
};

/** Fills the schema box once and shows it only while JSON mode is on. */
export function setUpJsonMode(signal: AbortSignal): void {
  const toggle = $<HTMLInputElement>('json-mode');
  const box = $<HTMLTextAreaElement>('json-schema');
  if (!box.value) box.value = JSON.stringify(EXAMPLE_SCHEMA, null, 2);
  const sync = () => ($('json-schema-field').hidden = !toggle.checked);
  sync();
  toggle.addEventListener('change', sync, { signal });
}

/** The response_format the settings ask for; an ArgumentError when the box is not a JSON object. */
export function readResponseFormat(): ResponseFormat | undefined {
  if (!$<HTMLInputElement>('json-mode').checked) return undefined;
  const text = $<HTMLTextAreaElement>('json-schema').value.trim();
  if (!text) return { type: 'json_object' };
  let schema: unknown;
  try {
    schema = JSON.parse(text);
  } catch (err) {
    throw new ArgumentError(`The JSON schema box is not valid JSON (${(err as Error).message}); empty it to ask for any JSON object`);
  }
  if (schema === null || typeof schema !== 'object' || Array.isArray(schema)) throw new ArgumentError('The JSON schema box must hold a JSON Schema object, such as {"type": "object", ...}');
  return { type: 'json_schema', json_schema: { name: 'demo', schema: schema as Record<string, unknown>, strict: true } };
}

/** Shows what `text` parses to under the reply `message` (its own block, so that the reply stays as written). */
export function showParsed(message: HTMLElement, text: string, finish: FinishReason): void {
  let shown: HTMLElement;
  try {
    shown = el('pre', JSON.stringify(JSON.parse(text), null, 2), { class: 'parsed', 'data-valid': 'true', 'aria-label': 'Parsed object' });
  } catch {
    const why = finish === 'length' ? 'the reply reached Max tokens before the object was complete' : 'the reply is not complete JSON';
    shown = el('p', `Not parsed: ${why}.`, { class: 'parsed', 'data-valid': 'false' });
  }
  message.append(shown);
}
