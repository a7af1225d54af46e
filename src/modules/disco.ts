// Placeholder: being written.
import type { Module } from './api.ts';

export const disco: Module = {
  name: 'disco',
  load() {},
};
