/**
 * The replication link's transport: plain TCP, or mutual TLS (node:tls) when
 * a certificate, key and CA are configured. With TLS both sides present a
 * certificate signed by the CA and verify the other's, so the link is
 * encrypted and authenticated before a single frame is read.
 */
import * as net from 'node:net';
import * as tls from 'node:tls';
import { connect, formatAddress, socketReady, type UpstreamAddress } from '../../sockets';

export interface TlsMaterial {
  cert: Buffer;
  key: Buffer;
  ca: Buffer;
}

/** The TLS settings of every replication socket, either side, with the node's material. */
function secureOptions(material: TlsMaterial) {
  return { ...material, rejectUnauthorized: true, minVersion: 'TLSv1.2' } as const;
}

export function replicationServer(material: TlsMaterial | null, onSocket: (socket: net.Socket) => void, onTlsError: (error: Error) => void): net.Server {
  if (!material) return net.createServer(onSocket);
  const server = tls.createServer({ ...secureOptions(material), requestCert: true }, onSocket);
  server.on('tlsClientError', onTlsError);
  return server;
}

/** New material (a reload) for the connections a TLS replication server accepts from now on; false if it is plain TCP. */
export function renewReplicationTls(server: net.Server, material: TlsMaterial): boolean {
  if (!(server instanceof tls.Server)) return false;
  server.setSecureContext(secureOptions(material));
  return true;
}

/** Dials the peer; with TLS, resolves only once the peer's certificate is verified. */
export function dialReplication(address: UpstreamAddress, timeoutMs: number, material: TlsMaterial | null): Promise<net.Socket> {
  if (!material) return connect(address, timeoutMs);
  if ('path' in address) return Promise.reject(new Error('a TLS replication peer must be host:port'));
  const socket = tls.connect({ host: address.host, port: address.port, ...secureOptions(material) });
  return socketReady(socket, 'secureConnect', `TLS connect to ${formatAddress(address)}`, timeoutMs);
}
