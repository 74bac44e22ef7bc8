/**
 * memcached-style logging to stderr: silent by default, `-v` for the
 * operator's lines (repcached's "replication: ..." among them), `-vv` for
 * per-connection detail. Errors and warnings always print.
 */
export interface Logger {
  readonly verbosity: number;
  /** A reload (SIGHUP) may change -v while running. */
  setVerbosity(verbosity: number): void;
  /** Shown at -v. */
  info(message: string): void;
  /** Shown at -vv. */
  debug(message: string): void;
  /** Printed at any verbosity: the answer to something the operator did (a reload). */
  notice(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

export function createLogger(verbosity: number, write: (line: string) => void = (line) => process.stderr.write(line)): Logger {
  return {
    get verbosity() {
      return verbosity;
    },
    setVerbosity: (level) => (verbosity = level),
    info: (message) => verbosity >= 1 && write(`${message}\n`),
    debug: (message) => verbosity >= 2 && write(`${message}\n`),
    notice: (message) => write(`${message}\n`),
    warn: (message) => write(`warning: ${message}\n`),
    error: (message) => write(`error: ${message}\n`),
  } as Logger;
}
