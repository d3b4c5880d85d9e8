// Human-sized numbers: `45s`, `3m12s`, `2h05m`, `3d4h`; money; sizes; times in UTC.

export function formatDuration(ms: number): string {
  const total = Math.max(0, Math.floor((Number.isFinite(ms) ? ms : 0) / 1000));
  if (total < 60) return `${total}s`;
  const minutes = Math.floor(total / 60);
  if (minutes < 60) return `${minutes}m${pad2(total % 60)}s`;
  const hours = Math.floor(minutes / 60);
  if (hours < 24) return `${hours}h${pad2(minutes % 60)}m`;
  return `${Math.floor(hours / 24)}d${hours % 24}h`;
}

/** Time from an ISO timestamp to `now`; `-` when the timestamp is missing or unreadable. */
export function formatAge(iso: string | undefined, now: number): string {
  const t = iso ? Date.parse(iso) : NaN;
  return Number.isNaN(t) ? '-' : formatDuration(now - t);
}

export function formatUSD(amount: number | undefined): string {
  if (amount === undefined || !Number.isFinite(amount)) return '-';
  if (amount !== 0 && Math.abs(amount) < 0.01) return `$${amount.toFixed(4)}`;
  return `$${amount.toFixed(2)}`;
}

export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(1)} ${units[i]}`;
}

/** `2026-01-01T12:00:03Z`: UTC to the second, the same on every machine reading the log. */
export function formatTime(iso: string | undefined): string {
  const t = iso ? Date.parse(iso) : NaN;
  return Number.isNaN(t) ? '-' : new Date(t).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** Loss with 4 significant digits, without trailing zeros: 0.31, 1.234, 0.0001235. */
export function formatLoss(loss: number): string {
  return String(Number(loss.toPrecision(4)));
}

function pad2(n: number): string {
  return n < 10 ? `0${n}` : String(n);
}
