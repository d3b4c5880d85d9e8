// The ledger in `runctl describe`: one row per attempt (its moments as offsets from its launch, how
// setup went, what it cost and saved) and one per interruption (notice to training again, each
// leg, the steps redone). Unknown costs print as `unknown` with the reason below the table, never
// as $0.
import type { AttemptLedger, InterruptionLedger, RunLedger } from '../reconciler/ledger.js';
import { formatDuration, formatTime, formatUSD } from './format.js';
import { alignColumns } from './table.js';
import { firstLine, sanitizeLine } from './text.js';

/** Seconds as `0.8s`, `12.4s` below a minute, else `3m12s`. */
export function formatSeconds(seconds: number | undefined): string {
  if (seconds === undefined || !Number.isFinite(seconds)) return '-';
  return seconds < 60 ? `${seconds.toFixed(1)}s` : formatDuration(seconds * 1000);
}

function offset(a: AttemptLedger, at: string | undefined): string {
  if (!at || !a.launchedAt) return '-';
  return `+${formatSeconds(Math.max(0, (Date.parse(at) - Date.parse(a.launchedAt)) / 1000))}`;
}

function setupCell(a: AttemptLedger): string {
  const at = offset(a, a.firstTrainedAt);
  if (!a.setup) return at;
  const how = a.setup.cache === 'restored' ? 'cache restored' : a.setup.cache === 'rebuilt' ? 'cache rebuilt' : 'ran';
  return `${at === '-' ? '' : `${at} `}(${how}${a.setup.seconds !== undefined ? ` ${formatSeconds(a.setup.seconds)}` : ''})`;
}

function costCell(a: AttemptLedger): string {
  if (a.costUSD === undefined) return 'unknown';
  return formatUSD(a.costUSD);
}

/** An hourly price as AWS lists spot prices: four decimals (`$0.1860/h`); `$0/h` for a free local instance. */
export function formatHourly(usdPerHour: number): string {
  return usdPerHour === 0 ? '$0/h' : `$${usdPerHour.toFixed(4)}/h`;
}

/** Lines of the Timeline and Interruptions sections (indented two spaces), or a note that there is nothing yet. */
export function ledgerLines(ledger: RunLedger | undefined): string[] {
  if (!ledger || ledger.attempts.length === 0) return ['  <none>'];
  const rows = ledger.attempts.map((a) => [
    String(a.attempt),
    String(a.generation),
    sanitizeLine([a.market, a.type, a.zone].filter(Boolean).join(' ') || '-'),
    a.launchedAt ? formatTime(a.launchedAt) : '-',
    offset(a, a.readyAt),
    setupCell(a),
    offset(a, a.noticedAt),
    a.finalCheckpointAt ? `${offset(a, a.finalCheckpointAt)}${a.finalCheckpointSafe ? '' : ' (not safe)'}` : '-',
    a.endedAt ? offset(a, a.endedAt) : 'running',
    a.usdPerHour !== undefined ? formatHourly(a.usdPerHour) : '-',
    costCell(a),
    formatUSD(a.savingsUSD),
  ]);
  const out = alignColumns(
    [['ATTEMPT', 'GEN', 'CAPACITY', 'LAUNCHED', 'READY', 'TRAINING', 'NOTICED', 'FINAL CKPT', 'ENDED', 'PRICE', 'COST', 'SAVED'], ...rows],
    { indent: '  ', align: ['right', 'right', 'left', 'left', 'left', 'left', 'left', 'left', 'left', 'right', 'right', 'right'] },
  );
  const saved = ledger.savingsUSD !== undefined ? `, ${formatUSD(ledger.savingsUSD)} saved against on-demand (${formatUSD(ledger.onDemandUSD)})` : '';
  out.push(`  Total: ${formatUSD(ledger.costUSD)}${ledger.unknown.length ? ' counted, some costs unknown' : ''}${saved}`);
  for (const u of ledger.unknown) out.push(`  unknown cost: ${firstLine(u)}`);
  if (ledger.interruptions.length > 0) {
    out.push('', '  Interruptions:');
    out.push(...interruptionLines(ledger.interruptions));
  }
  return out;
}

function interruptionLines(list: readonly InterruptionLedger[]): string[] {
  const rows = list.map((i) => {
    const legs = i.legs ?? {};
    const parts = [
      legs.finalCheckpoint !== undefined ? `final checkpoint ${formatSeconds(legs.finalCheckpoint)}` : '',
      legs.launch !== undefined ? `launch ${formatSeconds(legs.launch)}` : '',
      legs.boot !== undefined ? `boot ${formatSeconds(legs.boot)}` : '',
      legs.sync !== undefined ? `sync ${formatSeconds(legs.sync)}` : '',
      legs.setup !== undefined ? `setup+restore ${formatSeconds(legs.setup)}` : '',
    ].filter(Boolean);
    return [
      `${i.attempt} -> ${i.nextAttempt ?? '-'}`,
      formatTime(i.noticedAt),
      i.recoverySeconds !== undefined ? formatSeconds(i.recoverySeconds) : i.nextAttempt ? 'recovering' : '-',
      i.stepsRedone !== undefined ? String(i.stepsRedone) : '-',
      parts.join(', ') || '-',
    ];
  });
  return alignColumns([['ATTEMPT', 'NOTICED', 'TO TRAINING', 'STEPS REDONE', 'LEGS (from the notice)'], ...rows], {
    indent: '    ',
    align: ['left', 'left', 'right', 'right', 'left'],
  });
}
