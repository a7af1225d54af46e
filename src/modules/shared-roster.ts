// Shared roster groups from the user directory (--ldap-shared-roster): the
// members of each directory group a user is in appear in each other's rosters
// (RFC 6121 §2), in a roster group named after it, with a mutual subscription
// ("both"), as an administrator-managed contact list does in Prosody's
// mod_groups or ejabberd's mod_shared_roster.
//
// The items are written into the rosters themselves when a user binds a
// session, before the client can read its roster or send its initial presence:
// presence, probes and pushes then follow the ordinary RFC 6121 rules, and in a
// pool the items replicate like any roster item. Both directions are written
// for a contact that was new to the user; a user who later removes a shared
// contact gets it back at the next login. Someone who left a group keeps the
// items (nothing is removed automatically).
import { JID } from '../xmpp/jid.ts';
import { getBool } from '../admin/options.ts';
import { rosterStore, type RosterItem } from '../store/roster.ts';
import type { Session } from '../c2s/session.ts';
import type { Module } from './api.ts';
import { pushChanges } from './roster.ts';

/** The item `contact` should have in a roster, given the one it has: null when nothing changes. */
export function sharedItem(old: RosterItem | undefined, contact: string, group: string): RosterItem | null {
  if (old && old.subscription === 'both' && old.groups.includes(group)) return null;
  return {
    jid: contact,
    ...(old?.name !== undefined ? { name: old.name } : {}),
    subscription: 'both',
    groups: old ? [...new Set([...old.groups, group])] : [group],
  };
}

export const sharedRoster: Module = {
  name: 'shared-roster',
  load(m) {
    const directory = m.directory;
    if (m.config['ldap-shared-roster'] === undefined || !getBool(m.config, 'ldap-shared-roster')) return;
    if (!directory.sharedGroups) {
      m.log.warn('--ldap-shared-roster: the user directory has no groups; no shared roster groups');
      return;
    }
    const rosters = rosterStore(m.kv);
    const bareOf = (local: string): string => `${local}@${m.domain}`;

    m.hook<Session>('session-bound', async (session) => {
      const user = session.jid.local;
      let groups;
      try {
        groups = await directory.sharedGroups!(user);
      } catch (e) {
        // The directory is down and the user not cached: the roster stays as it is.
        m.log.debug(`shared roster of ${user} not updated: ${(e as Error).message}`);
        return;
      }
      if (!groups.length) return;
      const added = new Map<string, string[]>();
      const mine = await rosters.update(user, (tx) => {
        for (const g of groups) {
          for (const member of g.members) {
            if (member === user) continue;
            const item = sharedItem(tx.get(bareOf(member)), bareOf(member), g.name);
            if (!item) continue;
            tx.put(item);
            added.set(member, [...(added.get(member) ?? []), g.name]);
          }
        }
      });
      pushChanges(m.router, new JID(user, m.domain), mine.changes);
      // The other side, for the contacts that were new here.
      for (const [member, names] of added) {
        const { changes } = await rosters.update(member, (tx) => {
          for (const name of names) {
            const item = sharedItem(tx.get(bareOf(user)), bareOf(user), name);
            if (item) tx.put(item);
          }
        });
        // To the member's sessions on this node; elsewhere in a pool they see it at their next roster read.
        pushChanges(m.router, new JID(member, m.domain), changes);
      }
      if (added.size) m.log.debug(`shared roster of ${user}: ${added.size} contacts added from ${groups.map((g) => g.name).join(', ')}`);
    });
  },
};
