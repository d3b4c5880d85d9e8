// Where the dashboard listens, and the rule that keeps it private: it has no authentication of its
// own, so it binds loopback unless the user says, explicitly, that something else will guard it
// (an authenticating reverse proxy, docs/dashboard.md). Parsing is shared with `--metrics`.
import { isIP } from 'node:net';
import { MetricsAddressError, parseListenAddress } from '../reconciler/metrics.js';

export const DEFAULT_DASHBOARD_ADDRESS = '127.0.0.1:8080';

/** A `--listen`/`--dashboard` value that is not an address, or that would expose the dashboard unasked. */
export class DashboardAddressError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DashboardAddressError';
  }
}

export interface DashboardAddress {
  /** Host to bind (an IP literal or `localhost`); never empty. */
  host: string;
  /** TCP port; 0 asks the OS for a free one. */
  port: number;
  /** True for 127.0.0.0/8, ::1 and `localhost`. */
  loopback: boolean;
}

/**
 * Parses `host:port`, `[v6]:port`, `:port` or a bare `port` (the last two bind 127.0.0.1, unlike
 * `--metrics`, because a dashboard shows more than numbers). A non-loopback host is refused unless
 * `allowRemote` is set. Throws DashboardAddressError saying what would be valid.
 */
export function parseDashboardAddress(addr: string, opts: { flag: string; allowRemote: boolean; allowFlag: string }): DashboardAddress {
  const text = addr.trim();
  let parsed: { host?: string; port: number };
  try {
    parsed = parseListenAddress(/^\d+$/.test(text) ? `:${text}` : text);
  } catch (err) {
    if (!(err instanceof MetricsAddressError)) throw err;
    throw new DashboardAddressError(
      `${opts.flag} ${JSON.stringify(addr)} is not a listen address: use host:port (${DEFAULT_DASHBOARD_ADDRESS}), a port alone (8080, on 127.0.0.1), or [::1]:8080`,
    );
  }
  const host = parsed.host ?? '127.0.0.1';
  if (host !== 'localhost' && isIP(host) === 0) {
    throw new DashboardAddressError(
      `${opts.flag} ${JSON.stringify(addr)}: "${host}" is not an IP address: use 127.0.0.1 (this machine only), ::1, or an address of this machine with ${opts.allowFlag}`,
    );
  }
  const loopback = host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
  if (!loopback && !opts.allowRemote) {
    throw new DashboardAddressError(
      `${opts.flag} ${addr}: the dashboard has no login of its own, so it listens on loopback only (127.0.0.1 or ::1). ` +
        `To serve other machines, put it behind a reverse proxy that authenticates (docs/dashboard.md) and keep it on 127.0.0.1, ` +
        `or add ${opts.allowFlag} if something else already guards ${host}`,
    );
  }
  return { host, port: parsed.port, loopback };
}

/** What to print when the dashboard is reachable from other machines (only with the explicit flag). */
export function remoteWarning(address: DashboardAddress): string | undefined {
  if (address.loopback) return undefined;
  return (
    `warning: the dashboard listens on ${address.host}, reachable from other machines, with no login of its own: ` +
    'anyone who can reach it sees every run, its events and its logs; put an authenticating reverse proxy in front (docs/dashboard.md)'
  );
}
