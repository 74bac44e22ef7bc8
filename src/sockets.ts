/**
 * Addresses and sockets, as the proxy and replication both use them: where
 * memcached (or the peer) is, and a connection to it that fails in bounded
 * time.
 */
import * as net from 'node:net';

export type UpstreamAddress = { host: string; port: number } | { path: string };

/** "host:port", "[v6]:port", "host" (default port) or a unix socket path. */
export function parseAddress(text: string, defaultPort: number): UpstreamAddress {
  if (text.startsWith('/') || text.startsWith('./') || text.startsWith('unix:')) return { path: text.replace(/^unix:/, '') };
  const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(text);
  if (v6) return { host: v6[1], port: v6[2] ? Number(v6[2]) : defaultPort };
  const colon = text.lastIndexOf(':');
  if (colon > 0 && text.indexOf(':') === colon) {
    const port = Number(text.slice(colon + 1));
    if (!Number.isInteger(port) || port <= 0 || port > 65535) throw new Error(`bad port in address "${text}"`);
    return { host: text.slice(0, colon), port };
  }
  return { host: text, port: defaultPort };
}

export function formatAddress(address: UpstreamAddress): string {
  return 'path' in address ? address.path : address.host.includes(':') ? `[${address.host}]:${address.port}` : `${address.host}:${address.port}`;
}

/** Opens a TCP or unix socket connection, failing after `timeoutMs`. */
export function connect(address: UpstreamAddress, timeoutMs: number): Promise<net.Socket> {
  const socket = 'path' in address ? net.createConnection(address.path) : net.createConnection(address.port, address.host);
  socket.setNoDelay(true);
  return socketReady(socket, 'connect', `connect to ${formatAddress(address)}`, timeoutMs);
}

/**
 * Resolves with the socket once it emits `readyEvent` ('connect', or
 * 'secureConnect' for TLS); destroys it and rejects on an error or after
 * `timeoutMs`.
 */
export function socketReady<S extends net.Socket>(socket: S, readyEvent: string, what: string, timeoutMs: number): Promise<S> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`${what} timed out`));
    }, timeoutMs);
    socket.once(readyEvent, () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      resolve(socket);
    });
    socket.once('error', (error) => {
      clearTimeout(timer);
      socket.destroy();
      reject(error);
    });
  });
}

/**
 * Closes a connection to memcached so that what was sent on it is known to be
 * done. memcached reads everything that arrived before it sees the end of the
 * stream, runs it, and only then closes its side: so once this resolves, each
 * request sent on the connection has run, or never will (memcached died with
 * it). Whatever memcached answers meanwhile is read and dropped. A memcached
 * that stays silent for `graceMs` gets the connection destroyed, and then
 * nothing is known: it may still run what waits in its socket (a stopped
 * memcached does, once it resumes). Resolves with whether memcached closed
 * its side (true: all ran or never will) or was cut off (false).
 */
export function retire(socket: net.Socket, graceMs: number): Promise<boolean> {
  if (socket.destroyed) return Promise.resolve(true);
  return new Promise((resolve) => {
    let cutOff = false;
    const timer = setTimeout(() => {
      cutOff = true;
      socket.destroy();
    }, graceMs);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve(!cutOff);
    });
    socket.on('error', () => {});
    socket.end();
    socket.resume();
  });
}
