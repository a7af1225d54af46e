// Placeholder: being written.
import type { Module } from './api.ts';

export const vcard: Module = {
  name: 'vcard',
  load() {},
};
