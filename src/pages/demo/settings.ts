// The chat settings form: temperature, top-p, max tokens, MTP on or off and JSON mode
// (json_mode.ts), read into the engine's GenerateOptions; and the load settings (GPU budget,
// expert slots per layer), read into createEngine's options at each Load. A value out of range is
// an ArgumentError naming the setting.

import { ArgumentError, type CreateEngineOptions, type GenerateOptions, type ModelInfo } from './lib.ts';
import { $ } from './dom.ts';
import { readResponseFormat } from './json_mode.ts';

export type Settings = Pick<GenerateOptions, 'temperature' | 'topP' | 'maxTokens' | 'speculative' | 'responseFormat'>;

export type LoadSettings = Pick<CreateEngineOptions, 'gpuBudgetMib' | 'expertSlots'>;

/**
 * The load settings from the fields' text; an empty field is the engine's default (no budget;
 * slots automatic: all resident, or as many as the budget holds). The engine checks the slots
 * against the model's n_routed_experts.
 */
export function parseLoadSettings(gpuBudget: string, expertSlots: string): LoadSettings {
  const settings: LoadSettings = {};
  if (gpuBudget.trim() !== '') {
    const mib = Number(gpuBudget);
    if (!(Number.isFinite(mib) && mib > 0)) throw new ArgumentError(`GPU budget must be a positive number of MiB (empty: no budget), got ${gpuBudget}`);
    settings.gpuBudgetMib = mib;
  }
  if (expertSlots.trim() !== '') {
    const slots = Number(expertSlots);
    if (!(Number.isInteger(slots) && slots >= 1)) throw new ArgumentError(`Expert slots per layer must be a whole number of 1 or more (empty: automatic), got ${expertSlots}`);
    settings.expertSlots = slots;
  }
  return settings;
}

export function readLoadSettings(): LoadSettings {
  return parseLoadSettings($<HTMLInputElement>('gpu-budget').value, $<HTMLInputElement>('expert-slots').value);
}

export function readSettings(): Settings {
  const temperature = numberField('temperature', 'Temperature');
  const topP = numberField('top-p', 'Top-p');
  const maxTokens = numberField('max-tokens', 'Max tokens');
  if (!(temperature >= 0)) throw new ArgumentError(`Temperature must be 0 or more (0 always picks the likeliest token), got ${temperature}`);
  if (!(topP > 0 && topP <= 1)) throw new ArgumentError(`Top-p must be above 0 and at most 1, got ${topP}`);
  if (!(Number.isInteger(maxTokens) && maxTokens >= 1)) throw new ArgumentError(`Max tokens must be a whole number of 1 or more, got ${maxTokens}`);
  return { temperature, topP, maxTokens, speculative: speculativeSetting($<HTMLSelectElement>('mtp').value), responseFormat: readResponseFormat() };
}

/** The MTP select's value as GenerateOptions.speculative: auto (where it pays on this GPU), on, off. */
export function speculativeSetting(value: string): 'auto' | boolean {
  if (value === 'auto') return 'auto';
  if (value === 'on') return true;
  if (value === 'off') return false;
  throw new ArgumentError(`MTP must be auto, on or off, got "${value}"`);
}

/** MTP can only be used by a checkpoint that has the module. */
export function adaptSettings(info: ModelInfo): void {
  const mtp = $<HTMLSelectElement>('mtp');
  mtp.disabled = !info.hasMtp;
  mtp.value = info.hasMtp ? 'auto' : 'off';
  mtp.title = info.hasMtp ? '' : 'This checkpoint has no MTP module';
}

function numberField(id: string, name: string): number {
  const input = $<HTMLInputElement>(id);
  const value = input.valueAsNumber;
  if (Number.isNaN(value)) throw new ArgumentError(`${name} is empty or not a number`);
  return value;
}
