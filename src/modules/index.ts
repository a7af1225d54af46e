// The modules a node loads, in order. One XEP (or RFC chapter), one module.
import type { Module } from './api.ts';
import { roster } from './roster.ts';
import { presence } from './presence.ts';
import { message } from './message.ts';
import { offline } from './offline.ts';
import { carbons } from './carbons.ts';
import { disco } from './disco.ts';
import { ping } from './ping.ts';
import { version } from './version.ts';
import { time } from './time.ts';
import { vcard } from './vcard.ts';
import { blocking } from './blocking.ts';
import { register } from './register.ts';
import { muc } from './muc/service.ts';

export function defaultModules(): Module[] {
  return [roster, presence, message, offline, carbons, disco, ping, version, time, vcard, blocking, register, muc];
}
