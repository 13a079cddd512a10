// Typed reads of a request body's fields: each one checks its type and range and names the field
// in its 400 (OpenAI's `param`). `null` counts as absent, as OpenAI treats it (the Python client
// sends it for unset fields). Fields a reader is not asked about are ignored, as OpenAI and vLLM
// ignore unknown fields.

import { badField } from './http_error.ts';
import type { JsonObject } from './body.ts';

/** The field, or undefined when it is absent or null. */
function field(body: JsonObject, name: string): unknown {
  const value = body[name];
  return value === null ? undefined : value;
}

function describe(value: unknown): string {
  const text = JSON.stringify(value);
  return text === undefined ? String(value) : text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

export interface NumberRange {
  integer?: boolean;
  /** Inclusive bounds. */
  min?: number;
  max?: number;
  /** Exclusive lower bound. */
  above?: number;
  /** What the range is, in words, for the message ("a number in (0, 1]"). */
  expected: string;
}

export function optionalNumber(body: JsonObject, name: string, range: NumberRange): number | undefined {
  const value = field(body, name);
  if (value === undefined) return undefined;
  const ok =
    typeof value === 'number' &&
    Number.isFinite(value) &&
    (!range.integer || Number.isSafeInteger(value)) &&
    (range.min === undefined || value >= range.min) &&
    (range.max === undefined || value <= range.max) &&
    (range.above === undefined || value > range.above);
  if (!ok) throw badField(name, `${name} must be ${range.expected}, got ${describe(value)}`);
  return value;
}

export function optionalBoolean(body: JsonObject, name: string): boolean | undefined {
  const value = field(body, name);
  if (value === undefined) return undefined;
  if (typeof value !== 'boolean') throw badField(name, `${name} must be true or false, got ${describe(value)}`);
  return value;
}

export function optionalString(body: JsonObject, name: string): string | undefined {
  const value = field(body, name);
  if (value === undefined) return undefined;
  if (typeof value !== 'string') throw badField(name, `${name} must be a string, got ${describe(value)}`);
  return value;
}

export function optionalObject(body: JsonObject, name: string): JsonObject | undefined {
  const value = field(body, name);
  if (value === undefined) return undefined;
  if (typeof value !== 'object' || Array.isArray(value)) throw badField(name, `${name} must be an object, got ${describe(value)}`);
  return value as JsonObject;
}

/** An array of integers in [min, max]. */
export function optionalIntArray(body: JsonObject, name: string, min: number, max: number): number[] | undefined {
  const value = field(body, name);
  if (value === undefined) return undefined;
  if (!Array.isArray(value) || !value.every((v) => Number.isSafeInteger(v) && v >= min && v <= max)) {
    throw badField(name, `${name} must be an array of integers in [${min}, ${max}], got ${describe(value)}`);
  }
  return value as number[];
}

/** A field the server does not implement: accepted at its no-op value, refused otherwise. */
export function refuseUnless(body: JsonObject, name: string, isNoOp: (value: unknown) => boolean, message: string): void {
  const value = field(body, name);
  if (value !== undefined && !isNoOp(value)) throw badField(name, message, 'unsupported_parameter');
}

/** The body's `model`: absent is the served one (as vLLM allows); another name is a 404 (checked by the caller). */
export function modelField(body: JsonObject): string | undefined {
  return optionalString(body, 'model');
}
