import { describe, expect, it } from 'vitest';
import { collapseCarriageReturns, LogLines } from '../../src/ui/log-lines.js';

describe('log lines', () => {
  it('joins lines split across chunks and keeps an unfinished line pending', () => {
    const l = new LogLines();
    expect(l.push('ab')).toEqual([]);
    expect(l.pending()).toBe('ab');
    expect(l.push('c\nde')).toEqual(['abc']);
    expect(l.push('\n\n')).toEqual(['de', '']);
    expect(l.pending()).toBeUndefined();
    expect(l.push('last words')).toEqual([]);
    expect(l.flush()).toBe('last words');
    expect(l.flush()).toBeUndefined();
  });

  it('shows a carriage-return progress bar as its latest state', () => {
    const l = new LogLines();
    expect(l.push('epoch 1\n\r  0%|          | 0/60')).toEqual(['epoch 1']);
    expect(l.pending()).toBe('  0%|          | 0/60');
    expect(l.push('\r 50%|#####     | 30/60\r')).toEqual([]);
    expect(l.pending()).toBe(' 50%|#####     | 30/60');
    expect(l.push('\r100%|##########| 60/60\ndone\n')).toEqual(['100%|##########| 60/60', 'done']);
  });

  it('keeps the text of CRLF line endings', () => {
    expect(collapseCarriageReturns('windows line\r')).toBe('windows line');
    expect(collapseCarriageReturns('a\rb\r\r')).toBe('b');
    expect(collapseCarriageReturns('\r')).toBe('');
    expect(new LogLines().push('x\r\ny\r\n')).toEqual(['x', 'y']);
  });
});
