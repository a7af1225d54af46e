// XEP-0045 §10.2 room configuration with the muc#roomconfig form (§15.5.3
// field registry, XEP-0004 data forms), §10.1.2 instant room (empty submit),
// §10.2.1 notices of configuration changes (status 104, 172, 173), and the
// muc#roominfo form of §6.4 disco#info.
import { Element, x } from '../../xmpp/element.ts';
import { NS } from '../../xmpp/ns.ts';
import { StanzaError } from '../../xmpp/errors.ts';
import { tryParseJID } from '../../xmpp/jid.ts';
import {
  NS_MUC_ROOMCONFIG, NS_MUC_ROOMINFO, occupantCount, type AllowPM, type Defaults, type RoomConfig, type RoomState, type Whois,
} from './state.ts';

const MAXUSERS_CHOICES = ['10', '20', '30', '50', '100', '500', '1000'];

function field(v: string, type: string, label: string, values: string[], options?: string[]): Element {
  const f = x('field', { var: v, type, label });
  if (options) for (const o of options) f.append(x('option', { label: o }, x('value', null, o)));
  for (const val of values) f.append(x('value', null, val));
  return f;
}

const bool = (b: boolean) => [b ? '1' : '0'];

/** The owner's configuration form (§10.2 example 163), filled with the current values. */
export function configForm(s: RoomState): Element {
  const c = s.config;
  const owners = Object.keys(s.affiliations).filter((j) => s.affiliations[j] === 'owner').sort();
  const admins = Object.keys(s.affiliations).filter((j) => s.affiliations[j] === 'admin').sort();
  return x('x', { xmlns: NS.dataForms, type: 'form' },
    x('title', null, `Configuration for ${s.jid}`),
    x('field', { var: 'FORM_TYPE', type: 'hidden' }, x('value', null, NS_MUC_ROOMCONFIG)),
    field('muc#roomconfig_roomname', 'text-single', 'Natural-Language Room Name', [c.name]),
    field('muc#roomconfig_roomdesc', 'text-single', 'Short Description of Room', [c.description]),
    field('muc#roomconfig_persistentroom', 'boolean', 'Make Room Persistent?', bool(c.persistent)),
    field('muc#roomconfig_publicroom', 'boolean', 'Make Room Publicly Searchable?', bool(c.public)),
    field('muc#roomconfig_membersonly', 'boolean', 'Make Room Members-Only?', bool(c.membersOnly)),
    field('muc#roomconfig_moderatedroom', 'boolean', 'Make Room Moderated?', bool(c.moderated)),
    field('muc#roomconfig_passwordprotectedroom', 'boolean', 'Password Required to Enter?', bool(c.passwordProtected)),
    field('muc#roomconfig_roomsecret', 'text-private', 'Password', [c.password]),
    field('muc#roomconfig_maxusers', 'list-single', 'Maximum Number of Occupants', [c.maxUsers ? String(c.maxUsers) : 'none'], [...MAXUSERS_CHOICES, 'none']),
    field('muc#roomconfig_whois', 'list-single', 'Who May Discover Real JIDs?', [c.whois], ['moderators', 'anyone']),
    field('muc#roomconfig_changesubject', 'boolean', 'Allow Occupants to Change Subject?', bool(c.changeSubject)),
    field('muc#roomconfig_allowinvites', 'boolean', 'Allow Occupants to Invite Others?', bool(c.allowInvites)),
    field('muc#roomconfig_allowpm', 'list-single', 'Who May Send Private Messages?', [c.allowPM], ['anyone', 'participants', 'moderators', 'none']),
    field('muc#maxhistoryfetch', 'text-single', 'Maximum Number of History Messages Returned by Room', [String(c.maxHistory)]),
    field('muc#roomconfig_enablelogging', 'boolean', 'Enable Public Logging?', ['0']),
    field('muc#roomconfig_roomowners', 'jid-multi', 'Room Owners', owners),
    field('muc#roomconfig_roomadmins', 'jid-multi', 'Room Admins', admins),
  );
}

export interface ConfigChange {
  config: RoomConfig;
  /** Bare JIDs listed in roomowners/roomadmins, when the form had those fields. */
  owners?: string[];
  admins?: string[];
}

/**
 * Reads a submitted form (type 'submit'): fields absent keep their value
 * (§10.2: the owner may submit only the changed fields). Bad values are
 * not-acceptable (§10.2 example 169).
 */
export function applyConfigForm(s: RoomState, form: Element, defaults: Defaults): ConfigChange {
  const c: RoomConfig = { ...s.config };
  const out: ConfigChange = { config: c };
  const bad = (v: string, why: string): never => { throw new StanzaError('not-acceptable', `${v}: ${why}`); };
  for (const f of form.getChildren('field')) {
    const v = f.attrs.var;
    const values = f.getChildren('value').map((e) => e.text());
    const one = values[0] ?? '';
    const asBool = (): boolean => {
      if (one === '1' || one === 'true') return true;
      if (one === '0' || one === 'false' || one === '') return false;
      return bad(v, `'${one}' is not a boolean`);
    };
    switch (v) {
      case 'FORM_TYPE':
        if (one !== NS_MUC_ROOMCONFIG) bad(v, `expected ${NS_MUC_ROOMCONFIG}`);
        break;
      case 'muc#roomconfig_roomname': c.name = one; break;
      case 'muc#roomconfig_roomdesc': c.description = one; break;
      case 'muc#roomconfig_persistentroom': c.persistent = asBool(); break;
      case 'muc#roomconfig_publicroom': c.public = asBool(); break;
      case 'muc#roomconfig_membersonly': c.membersOnly = asBool(); break;
      case 'muc#roomconfig_moderatedroom': c.moderated = asBool(); break;
      case 'muc#roomconfig_passwordprotectedroom': c.passwordProtected = asBool(); break;
      case 'muc#roomconfig_roomsecret': c.password = one; break;
      case 'muc#roomconfig_changesubject': c.changeSubject = asBool(); break;
      case 'muc#roomconfig_allowinvites': c.allowInvites = asBool(); break;
      case 'muc#roomconfig_enablelogging':
        if (asBool()) bad(v, 'this service keeps no public logs');
        break;
      case 'muc#roomconfig_maxusers': {
        const n = one === 'none' || one === '' ? 0 : /^\d+$/.test(one) ? Number(one) : bad(v, `'${one}' is not a number`);
        if (defaults.maxUsersLimit && (n === 0 || n > defaults.maxUsersLimit)) bad(v, `at most ${defaults.maxUsersLimit}`);
        c.maxUsers = n;
        break;
      }
      case 'muc#maxhistoryfetch': {
        const n = /^\d+$/.test(one) ? Number(one) : bad(v, `'${one}' is not a number`);
        c.maxHistory = Math.min(n, defaults.maxHistoryLimit);
        break;
      }
      case 'muc#roomconfig_whois':
        if (one !== 'moderators' && one !== 'anyone') bad(v, `'${one}' is not moderators or anyone`);
        c.whois = one as Whois;
        break;
      case 'muc#roomconfig_allowpm':
        if (!['anyone', 'participants', 'moderators', 'none'].includes(one)) bad(v, `'${one}' is not a choice`);
        c.allowPM = one as AllowPM;
        break;
      case 'muc#roomconfig_roomowners':
      case 'muc#roomconfig_roomadmins': {
        const jids = values.map((j) => tryParseJID(j)?.toBareString() ?? bad(v, `'${j}' is not a JID`));
        if (v === 'muc#roomconfig_roomowners') out.owners = jids;
        else out.admins = jids;
        break;
      }
      default:
        // XEP-0004 §3.2: unknown fields of a submitted form are ignored.
        break;
    }
  }
  if (c.passwordProtected && c.password === '') bad('muc#roomconfig_roomsecret', 'a password-protected room needs a password');
  if (!c.passwordProtected) c.password = '';
  if (out.owners && out.owners.length === 0) throw new StanzaError('conflict', 'a room needs an owner');
  return out;
}

/** §15.5.4 muc#roominfo, returned with disco#info of the room (§6.4). */
export function roomInfoForm(s: RoomState): Element {
  return x('x', { xmlns: NS.dataForms, type: 'result' },
    x('field', { var: 'FORM_TYPE', type: 'hidden' }, x('value', null, NS_MUC_ROOMINFO)),
    field('muc#roominfo_description', 'text-single', 'Description', [s.config.description]),
    field('muc#roominfo_occupants', 'text-single', 'Number of occupants', [String(occupantCount(s))]),
    field('muc#roominfo_subject', 'text-single', 'Current Discussion Topic', [s.subject?.text ?? '']),
    field('muc#roomconfig_changesubject', 'boolean', 'Occupants May Change the Subject', bool(s.config.changeSubject)),
  );
}

/** §6.4 features of a room, from its configuration. */
export function roomFeatures(s: RoomState): string[] {
  const c = s.config;
  return [
    'http://jabber.org/protocol/muc',
    c.public ? 'muc_public' : 'muc_hidden',
    c.persistent ? 'muc_persistent' : 'muc_temporary',
    c.membersOnly ? 'muc_membersonly' : 'muc_open',
    c.moderated ? 'muc_moderated' : 'muc_unmoderated',
    c.whois === 'anyone' ? 'muc_nonanonymous' : 'muc_semianonymous',
    c.passwordProtected ? 'muc_passwordprotected' : 'muc_unsecured',
  ];
}
