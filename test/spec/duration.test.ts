import { describe, expect, it } from 'vitest';
import { formatDuration, parseDuration, suggestDuration } from '../../src/spec/duration.js';

describe('parseDuration', () => {
  it.each([
    ['500ms', 500],
    ['90s', 90_000],
    ['15m', 900_000],
    ['48h', 172_800_000],
    ['7d', 604_800_000],
    ['1h30m', 5_400_000],
    ['1.5h', 5_400_000],
    ['0s', 0],
  ])('%s is %d ms', (text, ms) => {
    expect(parseDuration(text)).toBe(ms);
  });

  it.each(['', '90', '5 m', '5min', '-5s', '1h 30m', 'h', '1.s', ' 5s'])('refuses %j', (text) => {
    expect(() => parseDuration(text)).toThrow(/invalid duration/);
  });
});

describe('formatDuration', () => {
  it.each([
    [450, '450ms'],
    [42_000, '42s'],
    [300_000, '5m'],
    [65_000, '1m05s'],
    [9_000_000, '2h30m'],
    [187_200_000, '2d4h'],
  ])('%d ms is %s, and reads back', (ms, text) => {
    expect(formatDuration(ms)).toBe(text);
    expect(parseDuration(text)).toBe(ms);
  });
});

describe('suggestDuration', () => {
  it.each([
    ['5 minutes', '5m'],
    ['10 Minutes', '10m'],
    ['2H', '2h'],
    ['30 sec', '30s'],
    ['3 days', '3d'],
    ['1.5 hours', '1.5h'],
  ])('%j suggests %s', (text, suggestion) => {
    expect(suggestDuration(text)).toBe(suggestion);
  });

  it.each(['soon', '5 fortnights', '15m'])('%j suggests nothing', (text) => {
    expect(suggestDuration(text)).toBeUndefined();
  });
});
