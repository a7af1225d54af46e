// Placeholder: being written.
import type { Module } from './api.ts';

export const roster: Module = {
  name: 'roster',
  load() {},
};
