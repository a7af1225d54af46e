// Placeholder: being written.
import type { Module } from './api.ts';

export const offline: Module = {
  name: 'offline',
  load() {},
};
