// Placeholder: being written.
import type { Module } from './api.ts';

export const register: Module = {
  name: 'register',
  load() {},
};
