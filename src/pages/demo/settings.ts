// The chat settings form: temperature, top-p, max tokens, MTP on or off and JSON mode
// (json_mode.ts), read into the engine's GenerateOptions. A value out of range is an
// ArgumentError naming the setting.

import { ArgumentError, type GenerateOptions, type ModelInfo } from './lib.ts';
import { $ } from './dom.ts';
import { readResponseFormat } from './json_mode.ts';

export type Settings = Pick<GenerateOptions, 'temperature' | 'topP' | 'maxTokens' | 'speculative' | 'responseFormat'>;

export function readSettings(): Settings {
  const temperature = numberField('temperature', 'Temperature');
  const topP = numberField('top-p', 'Top-p');
  const maxTokens = numberField('max-tokens', 'Max tokens');
  if (!(temperature >= 0)) throw new ArgumentError(`Temperature must be 0 or more (0 always picks the likeliest token), got ${temperature}`);
  if (!(topP > 0 && topP <= 1)) throw new ArgumentError(`Top-p must be above 0 and at most 1, got ${topP}`);
  if (!(Number.isInteger(maxTokens) && maxTokens >= 1)) throw new ArgumentError(`Max tokens must be a whole number of 1 or more, got ${maxTokens}`);
  return { temperature, topP, maxTokens, speculative: $<HTMLInputElement>('mtp').checked, responseFormat: readResponseFormat() };
}

/** MTP can only be switched on for a checkpoint that has the module. */
export function adaptSettings(info: ModelInfo): void {
  const mtp = $<HTMLInputElement>('mtp');
  mtp.disabled = !info.hasMtp;
  mtp.checked = info.hasMtp;
  mtp.title = info.hasMtp ? '' : 'This checkpoint has no MTP module';
}

function numberField(id: string, name: string): number {
  const input = $<HTMLInputElement>(id);
  const value = input.valueAsNumber;
  if (Number.isNaN(value)) throw new ArgumentError(`${name} is empty or not a number`);
  return value;
}
