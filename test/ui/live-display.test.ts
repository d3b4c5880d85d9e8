import { afterEach, describe, expect, it } from 'vitest';
import type { RunStatus } from '../../src/state/types.js';
import { createColors } from '../../src/ui/colors.js';
import { LiveDisplay, type LiveDisplayOptions } from '../../src/ui/live-display.js';
import { statusFixture, T0 } from '../state/status-fixture.js';

const displays: LiveDisplay[] = [];
afterEach(() => {
  for (const d of displays.splice(0)) d.close();
});

function display(opts: Partial<LiveDisplayOptions> & { tty: boolean }) {
  const clock = { now: T0 + 65_000 };
  const chunks: string[] = [];
  const d = new LiveDisplay({ write: (c) => chunks.push(c), clock: () => clock.now, refreshMs: 0, ...opts });
  displays.push(d);
  return { d, chunks, clock, text: () => chunks.join('') };
}

const run = (overrides: Partial<RunStatus>) => statusFixture('quickstart', overrides);
const training = (step: number, attempt = 1) => run({ phase: 'Training', attempt, progress: { step, total: 400 } });
// Any escape byte at all.
const ESC = /\x1b/;

describe('plain (non-TTY) mode', () => {
  it('prints a line only when phase, attempt or a tenth of progress changes, without escape codes', () => {
    const { d, text, clock } = display({ tty: false });
    d.update([run({ phase: 'Pending' })]);
    d.update([run({ phase: 'Pending' })]);
    clock.now += 5_000;
    d.update([run({ phase: 'Provisioning' })]);
    d.update([run({ phase: 'Installing', agent: { attempt: 1, phase: 'installing', seq: 1, heartbeatAt: '', logTail: ['pip install'] } })]);
    d.update([training(0)]);
    d.update([training(39)]);
    d.update([training(40)]);
    d.update([training(41)]);
    d.update([training(79)]);
    d.update([training(200)]);
    d.update([training(200, 2)]);
    d.update([run({ phase: 'Completed', attempt: 2, progress: { step: 400, total: 400 }, updatedAt: new Date(T0 + 600_000).toISOString() })]);
    d.close();

    expect(text()).toBe(
      [
        'quickstart  Pending  attempt 1  1m05s',
        'quickstart  Provisioning  attempt 1  1m10s',
        'quickstart  Installing  attempt 1  1m10s',
        'quickstart  Training  attempt 1  [----------] 0/400  1m10s',
        'quickstart  Training  attempt 1  [#---------] 40/400  1m10s',
        'quickstart  Training  attempt 1  [#####-----] 200/400  1m10s',
        'quickstart  Training  attempt 2  [#####-----] 200/400  1m10s',
        'quickstart  Completed  attempt 2  [##########] 400/400  10m00s',
        '',
      ].join('\n'),
    );
    expect(text()).not.toMatch(ESC);
  });

  it('tracks each run on its own and prints new runs as they appear', () => {
    const { d, chunks } = display({ tty: false });
    const a = statusFixture('a', { phase: 'Training', progress: { step: 1, total: 10 } });
    const b = statusFixture('b', { phase: 'Pending' });
    d.update([a]);
    d.update([a, b]);
    d.update([{ ...a, progress: { step: 2, total: 10 } }, b]);
    expect(chunks).toEqual([
      'a  Training  attempt 1  [#---------] 1/10  1m05s\n',
      'b  Pending   attempt 1                     1m05s\n',
      'a  Training  attempt 1  [##--------] 2/10  1m05s\n',
    ]);
  });

  it('never redraws: time passing alone prints nothing', async () => {
    const { d, chunks, clock } = display({ tty: false, refreshMs: 1 });
    d.update([training(10)]);
    clock.now += 60_000;
    await new Promise((r) => setTimeout(r, 20));
    d.update([training(11)]);
    expect(chunks).toHaveLength(1);
  });

  it('prints log lines as they come, and cuts lines to the width (default 100)', () => {
    const { d, chunks } = display({ tty: false });
    d.log('validated 1 run');
    d.update([run({ phase: 'Failed', failure: { reason: 'JobFailed', message: `exit code 1: ${'x'.repeat(200)}` } })]);
    expect(chunks[0]).toBe('validated 1 run\n');
    expect(chunks[1]).toHaveLength(101);
    expect(chunks[1]).toMatch(/^quickstart {2}Failed {2}attempt 1 {2}0s {2}exit code 1: x+…\n$/);
  });
});

describe('TTY mode', () => {
  it('redraws in place with cursor-up and clear-line, including the install tail while Installing', () => {
    const { d, chunks } = display({ tty: true, throttleMs: 0 });
    const installing = run({ phase: 'Installing', agent: { attempt: 1, phase: 'installing', seq: 1, heartbeatAt: '', logTail: ['one', 'two', 'three', 'four'] } });
    d.update([installing]);
    d.update([training(120)]);
    expect(chunks).toEqual([
      '\r\x1b[2Kquickstart  Installing  attempt 1  1m05s\n\r\x1b[2K    two\n\r\x1b[2K    three\n\r\x1b[2K    four\n',
      // Back up over the four lines drawn, draw the one line now needed, clear what is left below.
      '\x1b[4A\r\x1b[2Kquickstart  Training  attempt 1  [###-------] 120/400  1m05s\n\x1b[J',
    ]);
  });

  it('throttles redraws and skips frames that would look the same', () => {
    const { d, chunks, clock } = display({ tty: true, throttleMs: 100 });
    d.update([training(1)]);
    d.update([training(2)]);
    d.update([training(3)]);
    expect(chunks).toHaveLength(1);
    d.flush();
    expect(chunks).toHaveLength(2);
    expect(chunks[1]).toContain('3/400');
    clock.now += 100;
    d.update([training(3)]);
    expect(chunks).toHaveLength(2);
  });

  it('draws the pending frame on close, then ignores updates', () => {
    const { d, chunks } = display({ tty: true, throttleMs: 1000 });
    d.update([training(1)]);
    d.update([training(2)]);
    d.close();
    d.update([training(3)]);
    expect(chunks).toHaveLength(2);
    expect(chunks[1]).toContain('2/400');
  });

  it('prints log lines above the live area and redraws it below', () => {
    const { d, chunks } = display({ tty: true, throttleMs: 0 });
    d.update([training(1)]);
    d.log('note: took over .runctl/controller.lock');
    expect(chunks[1]).toBe('\x1b[1A\r\x1b[Jnote: took over .runctl/controller.lock\n');
    expect(chunks[2]).toBe('\r\x1b[2Kquickstart  Training  attempt 1  [----------] 1/400  1m05s\n');
  });

  it('keeps lines one column short of the terminal width so they never wrap', () => {
    const { d, chunks } = display({ tty: true, throttleMs: 0, width: () => 30 });
    d.update([training(1)]);
    expect(chunks[0]).toBe('\r\x1b[2Kquickstart  Training  attemp…\n');
  });

  it('uses color on a terminal unless NO_COLOR is set; cursor movement either way', () => {
    const out: string[] = [];
    const stream = { isTTY: true, columns: 120, write: (c: string) => out.push(c) };
    const colored = LiveDisplay.forStream(stream, {}, { refreshMs: 0, throttleMs: 0, clock: () => T0 });
    colored.update([training(1)]);
    colored.update([training(2)]);
    colored.close();
    expect(out.join('')).toContain('\x1b[36mTraining\x1b[39m');

    out.length = 0;
    const plain = LiveDisplay.forStream(stream, { NO_COLOR: '1' }, { refreshMs: 0, throttleMs: 0, clock: () => T0 });
    plain.update([training(1)]);
    plain.update([training(2)]);
    plain.close();
    const text = out.join('');
    expect(text).toContain('\x1b[1A');
    expect(text).not.toMatch(/\x1b\[[0-9;]*m/);

    out.length = 0;
    const piped = LiveDisplay.forStream({ ...stream, isTTY: false }, {}, { clock: () => T0 });
    piped.update([training(1)]);
    piped.close();
    expect(out.join('')).not.toMatch(ESC);
  });

  it('explicit colors passed in are used as given', () => {
    const { d, chunks } = display({ tty: true, throttleMs: 0, colors: createColors(true) });
    d.update([run({ phase: 'Failed' })]);
    expect(chunks[0]).toContain('\x1b[31mFailed\x1b[39m');
  });
});
