/** Test certificates made with openssl (one day, for 127.0.0.1). */
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';

export interface Certificate {
  cert: string;
  key: string;
  ca: string;
}

/** A CA named `name` and a certificate it signed for 127.0.0.1, as files in `dir`. */
export function signedCertificate(dir: string, name: string): Certificate {
  const file = (suffix: string) => path.join(dir, `${name}-${suffix}`);
  const openssl = (...args: string[]) => execFileSync('openssl', args, { stdio: 'pipe' });
  openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', file('ca.key'), '-out', file('ca.pem'), '-days', '1', '-subj', `/CN=${name}-ca`);
  openssl(
    'req',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-keyout',
    file('node.key'),
    '-out',
    file('node.csr'),
    '-subj',
    `/CN=${name}-node`,
    '-addext',
    'subjectAltName=IP:127.0.0.1',
  );
  openssl(
    'x509',
    '-req',
    '-in',
    file('node.csr'),
    '-CA',
    file('ca.pem'),
    '-CAkey',
    file('ca.key'),
    '-CAcreateserial',
    '-out',
    file('node.pem'),
    '-days',
    '1',
    '-copy_extensions',
    'copy',
  );
  return { cert: file('node.pem'), key: file('node.key'), ca: file('ca.pem') };
}

/** memrepl's flags for mutual TLS on the replication link with `certificate`. */
export function linkTlsFlags({ cert, key, ca }: Certificate): string[] {
  return ['--replication-tls-cert', cert, '--replication-tls-key', key, '--replication-tls-ca', ca];
}
