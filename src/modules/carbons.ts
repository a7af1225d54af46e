// Placeholder: being written.
import type { Module } from './api.ts';

export const carbons: Module = {
  name: 'carbons',
  load() {},
};
