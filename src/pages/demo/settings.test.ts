import { describe, expect, it } from 'vitest';
import { ArgumentError } from './lib.ts';
import { parseLoadSettings, speculativeSetting } from './settings.ts';

describe('parseLoadSettings', () => {
  it("leaves empty fields to the engine's defaults and passes the numbers given", () => {
    expect(parseLoadSettings('', '')).toEqual({});
    expect(parseLoadSettings(' ', '')).toEqual({});
    expect(parseLoadSettings('24.5', '')).toEqual({ gpuBudgetMib: 24.5 });
    expect(parseLoadSettings('', '1')).toEqual({ expertSlots: 1 });
    expect(parseLoadSettings('1000', '8')).toEqual({ gpuBudgetMib: 1000, expertSlots: 8 });
  });

  it('refuses a budget that is not a positive number and slots that are not a whole number of 1 or more, naming the setting', () => {
    for (const budget of ['0', '-5', 'abc', 'Infinity']) {
      expect(() => parseLoadSettings(budget, '')).toThrow(ArgumentError);
      expect(() => parseLoadSettings(budget, '')).toThrow(`GPU budget must be a positive number of MiB (empty: no budget), got ${budget}`);
    }
    for (const slots of ['0', '-1', '1.5', 'x']) {
      expect(() => parseLoadSettings('', slots)).toThrow(`Expert slots per layer must be a whole number of 1 or more (empty: automatic), got ${slots}`);
    }
  });
});

describe('speculativeSetting', () => {
  it('maps the MTP select to the engine option, and refuses anything else', () => {
    expect([speculativeSetting('auto'), speculativeSetting('on'), speculativeSetting('off')]).toEqual(['auto', true, false]);
    expect(() => speculativeSetting('yes')).toThrow(ArgumentError);
  });
});
