// Placeholder: being written.
import type { Module } from './api.ts';

export const blocking: Module = {
  name: 'blocking',
  load() {},
};
