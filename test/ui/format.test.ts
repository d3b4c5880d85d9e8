import { describe, expect, it } from 'vitest';
import { formatAge, formatBytes, formatDuration, formatLoss, formatTime, formatUSD } from '../../src/ui/format.js';

describe('formatDuration', () => {
  it.each([
    [0, '0s'],
    [999, '0s'],
    [45_000, '45s'],
    [59_999, '59s'],
    [60_000, '1m00s'],
    [192_000, '3m12s'],
    [185_000, '3m05s'],
    [3_599_000, '59m59s'],
    [3_600_000, '1h00m'],
    [2 * 3_600_000 + 5 * 60_000 + 59_000, '2h05m'],
    [86_399_000, '23h59m'],
    [86_400_000, '1d0h'],
    [3 * 86_400_000 + 4 * 3_600_000 + 59 * 60_000, '3d4h'],
    [-5_000, '0s'],
    [Number.NaN, '0s'],
  ])('%d ms -> %s', (ms, text) => {
    expect(formatDuration(ms)).toBe(text);
  });
});

describe('other formats', () => {
  it('ages from ISO times, with - for missing or unreadable ones', () => {
    const now = Date.parse('2026-01-01T12:03:12Z');
    expect(formatAge('2026-01-01T12:00:00Z', now)).toBe('3m12s');
    expect(formatAge(undefined, now)).toBe('-');
    expect(formatAge('yesterday-ish', now)).toBe('-');
  });

  it('money: cents normally, four decimals for fractions of a cent', () => {
    expect(formatUSD(undefined)).toBe('-');
    expect(formatUSD(0)).toBe('$0.00');
    expect(formatUSD(0.0042)).toBe('$0.0042');
    expect(formatUSD(12.345)).toBe('$12.35');
    expect(formatUSD(250)).toBe('$250.00');
  });

  it('times in UTC to the second, sizes, losses', () => {
    expect(formatTime('2026-01-01T12:00:03.456Z')).toBe('2026-01-01T12:00:03Z');
    expect(formatTime('2026-01-01T13:00:03+01:00')).toBe('2026-01-01T12:00:03Z');
    expect(formatBytes(512)).toBe('512 B');
    expect(formatBytes(2048)).toBe('2.0 KiB');
    expect(formatBytes(5 * 1024 ** 3)).toBe('5.0 GiB');
    expect(formatLoss(0.31)).toBe('0.31');
    expect(formatLoss(0.312345)).toBe('0.3123');
    expect(formatLoss(0.00012346)).toBe('0.0001235');
  });
});
