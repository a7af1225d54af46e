// Placeholder: being written.
import type { Module } from './api.ts';

export const presence: Module = {
  name: 'presence',
  load() {},
};
