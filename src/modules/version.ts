// XEP-0092 Software Version §2: the server's name and version, and its operating
// system only when the operator allows it (§4 security considerations: the OS
// helps an attacker pick an exploit).
import { VERSION } from '../admin/version.ts';
import * as os from 'node:os';
import { x } from '../xmpp/element.ts';
import { NS } from '../xmpp/ns.ts';
import { declareOptions } from '../admin/options.ts';
import type { Module } from './api.ts';

declareOptions([
  { name: 'hide-os-version', type: 'bool', default: true, group: 'version',
    description: 'Leave the operating system out of software version answers (XEP-0092); --no-hide-os-version includes it.' },
]);

export const version: Module = {
  name: 'version',
  load(m) {
    const showOs = m.config['hide-os-version'] === false;
    m.feature(NS.version);
    m.iq('get', 'host', NS.version, () => x('query', { xmlns: NS.version },
      x('name', null, 'imnode'),
      x('version', null, VERSION),
      showOs ? x('os', null, `${os.type()} ${os.release()}`) : null,
    ));
  },
};
