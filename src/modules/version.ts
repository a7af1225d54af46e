// Placeholder: being written.
import type { Module } from './api.ts';

export const version: Module = {
  name: 'version',
  load() {},
};
