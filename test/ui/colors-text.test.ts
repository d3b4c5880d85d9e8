import { describe, expect, it } from 'vitest';
import { colorPhase, createColors, shouldUseColor } from '../../src/ui/colors.js';
import { firstLine, sanitizeLine, stripAnsi, truncate, visibleWidth } from '../../src/ui/text.js';

const tty = { isTTY: true };
const pipe = { isTTY: false };

describe('shouldUseColor', () => {
  it.each([
    ['a TTY', tty, {}, true],
    ['a pipe', pipe, {}, false],
    ['a stream that says nothing', undefined, {}, false],
    ['NO_COLOR=1 on a TTY', tty, { NO_COLOR: '1' }, false],
    ['NO_COLOR=true on a TTY', tty, { NO_COLOR: 'true' }, false],
    ['NO_COLOR empty on a TTY (unset per no-color.org)', tty, { NO_COLOR: '' }, true],
    ['FORCE_COLOR=0 on a TTY', tty, { FORCE_COLOR: '0' }, false],
    ['FORCE_COLOR=false on a TTY', tty, { FORCE_COLOR: 'false' }, false],
    ['FORCE_COLOR=1 on a pipe', pipe, { FORCE_COLOR: '1' }, true],
    ['NO_COLOR and FORCE_COLOR=1 together', tty, { NO_COLOR: '1', FORCE_COLOR: '1' }, false],
    ['TERM=dumb on a TTY', tty, { TERM: 'dumb' }, false],
  ])('%s -> %s', (_label, stream, env, expected) => {
    expect(shouldUseColor(stream, env)).toBe(expected);
  });

  it('disabled colors leave text untouched; enabled ones wrap it', () => {
    expect(createColors(false).red('Failed')).toBe('Failed');
    expect(createColors(true).red('Failed')).toBe('\x1b[31mFailed\x1b[39m');
    expect(colorPhase(createColors(true), 'Completed')).toBe('\x1b[32mCompleted\x1b[39m');
    expect(colorPhase(createColors(false), 'Training')).toBe('Training');
  });
});

describe('text', () => {
  it('measures width without color codes', () => {
    expect(visibleWidth('\x1b[31mabc\x1b[39m')).toBe(3);
    expect(stripAnsi('\x1b]0;title\x07x\x1b[2K')).toBe('x');
  });

  it('makes untrusted output printable: last carriage-return segment, no escapes or controls', () => {
    expect(sanitizeLine('Downloading  10%\r Downloading  50%\r\n')).toBe(' Downloading  50%');
    expect(sanitizeLine('\x1b[1A\x1b[2Kok\x1b]0;pwned\x07\tdone\x07\x00')).toBe('ok  done');
  });

  it('keeps the first line of a message and says how many more there were', () => {
    expect(firstLine('exit code 1\n\nTraceback\nValueError\n')).toBe('exit code 1 (+2 more lines)');
    expect(firstLine('single')).toBe('single');
    expect(firstLine('')).toBe('');
  });

  it('truncates to a visible width with an ellipsis, keeping color codes balanced', () => {
    expect(truncate('abcdef', 6)).toBe('abcdef');
    expect(truncate('abcdef', 4)).toBe('abc…');
    expect(truncate('\x1b[31mabcdef\x1b[39m', 4)).toBe('\x1b[31mabc…\x1b[0m');
    expect(visibleWidth(truncate('\x1b[31mabcdef\x1b[39m', 4))).toBe(4);
  });
});
