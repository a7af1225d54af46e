// Placeholder: being written.
import type { Module } from './api.ts';

export const time: Module = {
  name: 'time',
  load() {},
};
