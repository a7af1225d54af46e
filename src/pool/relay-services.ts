// The libp2p services behind the pool's relays (src/pool/relay.ts says what the
// pool needs of them and why): the circuit relay v2 server of a relay-only node,
// the circuit relay transport and DCUtR of a node with --relay. Imported only by
// nodes that use relays (libp2p-pool.ts loads this file on demand).
import { circuitRelayServer, circuitRelayTransport } from '@libp2p/circuit-relay-v2';
import { dcutr } from '@libp2p/dcutr';
import { MAX_RELAYED_STREAMS, type RelayServerOptions } from './relay.ts';

/** How a pool relay takes reservations. */
export function relayReservationInit(o: RelayServerOptions = {}): { maxReservations: number; applyDefaultLimit: boolean } {
  return {
    maxReservations: o.maxReservations ?? 256,
    // No per-connection data or time limit (relay.ts): pool connections through the relay are never cut.
    applyDefaultLimit: false,
  };
}

/** The relay server service of a relay-only node. */
export function relayServerService(o: RelayServerOptions = {}): ReturnType<typeof circuitRelayServer> {
  return circuitRelayServer({
    maxInboundHopStreams: MAX_RELAYED_STREAMS,
    maxOutboundStopStreams: MAX_RELAYED_STREAMS,
    reservations: relayReservationInit(o),
  });
}

/** The transport of a node with relays: dials relayed addresses, makes the reservations. */
export function relayTransport(): ReturnType<typeof circuitRelayTransport> {
  return circuitRelayTransport({
    maxInboundStopStreams: MAX_RELAYED_STREAMS,
    maxOutboundStopStreams: MAX_RELAYED_STREAMS,
    // One reservation attempt per listed relay at a time.
    reservationConcurrency: 4,
  });
}

/** Hole punching (DCUtR): only between public addresses, see relay.ts. */
export function holePunching(): ReturnType<typeof dcutr> {
  return dcutr();
}
