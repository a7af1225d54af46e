// Placeholder: being written.
import type { Module } from './api.ts';

export const message: Module = {
  name: 'message',
  load() {},
};
