import { describe, expect, it } from 'vitest';
import { DeviceLostError, GpuOutOfMemoryError, MissingFileError, WebmoeError } from '../../errors.ts';
import { explainError } from './alert.ts';

describe('explainError', () => {
  it('keeps a WebmoeError message and says what to do for the failures a visitor meets', () => {
    const lost = explainError(new DeviceLostError('unknown', 'driver reset'));
    expect(lost.title).toBe('The GPU stopped working for this page');
    expect(lost.message).toContain('driver reset');
    expect(lost.advice).toContain('Load the model again');
    expect(explainError(new GpuOutOfMemoryError('weights: 2 GiB buffer')).advice).toContain('smaller checkpoint');
    expect(explainError(new MissingFileError('config.json', 'https://x/'))).toMatchObject({ title: 'A file is missing', message: 'config.json not found in https://x/' });
    // A worker's lost engine arrives as a plain WebmoeError with the DEVICE_LOST code.
    expect(explainError(new WebmoeError('DEVICE_LOST', "The engine's Worker stopped")).title).toBe(lost.title);
  });

  it('calls anything else "Something went wrong" with its message', () => {
    expect(explainError(new TypeError('x is undefined'))).toMatchObject({ title: 'Something went wrong', message: 'x is undefined' });
    expect(explainError('a string')).toMatchObject({ title: 'Something went wrong', message: 'a string' });
  });
});
