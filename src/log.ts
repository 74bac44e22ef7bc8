/**
 * memcached-style logging to stderr: silent by default, `-v` for the
 * operator's lines (repcached's "replication: ..." among them), `-vv` for
 * per-connection detail. Errors and warnings always print.
 */
export interface Logger {
  readonly verbosity: number;
  /** Shown at -v. */
  info(message: string): void;
  /** Shown at -vv. */
  debug(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

export function createLogger(verbosity: number, write: (line: string) => void = (line) => process.stderr.write(line)): Logger {
  return {
    verbosity,
    info: (message) => verbosity >= 1 && write(`${message}\n`),
    debug: (message) => verbosity >= 2 && write(`${message}\n`),
    warn: (message) => write(`warning: ${message}\n`),
    error: (message) => write(`error: ${message}\n`),
  } as Logger;
}
