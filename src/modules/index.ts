// The modules a node loads, in order. One XEP (or RFC chapter), one module.
import type { Module } from './api.ts';
import { ping } from './ping.ts';

export function defaultModules(): Module[] {
  return [ping];
}
