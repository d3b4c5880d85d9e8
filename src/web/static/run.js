// One run: summary, the progress curve across attempts, the attempts on a timeline, conditions,
// checkpoints, events and the log's tail, all redrawn from /api/runs/<name>/stream as they change.
import { age, bytes, el, fillRows, follow, phaseBadge, progressCell, time, usd } from './common.js';
import { metricNames, ProgressChart } from './chart.js';

const name = decodeURIComponent(location.pathname.replace(/^\/runs\//, ''));
document.title = `${name} · runctl`;
document.getElementById('name').textContent = name;
const chart = new ProgressChart(document.getElementById('chart'));
const metricSelect = document.getElementById('metric');
const axisSelect = document.getElementById('xaxis');
let latest = null;

function kv(dl, rows) {
  dl.replaceChildren(...rows.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]));
}

function summary(r) {
  const now = Date.now();
  const rows = [
    ['Phase', phaseBadge(r.phase)],
    ['Attempt', `${r.attempt} (${r.interruptions} interruption${r.interruptions === 1 ? '' : 's'}, ${r.errorRetries} error retr${r.errorRetries === 1 ? 'y' : 'ies'})`],
    ['Generation', `${r.generation} (observed ${r.observedGeneration})`],
    ['Progress', progressCell(r.progress)],
    ['Cost', r.budgetUSD !== null ? `${usd(r.costUSD)} of ${usd(r.budgetUSD)} budget` : usd(r.costUSD)],
    ['Last checkpoint', r.lastCheckpoint ? `${r.lastCheckpoint.id} at step ${r.lastCheckpoint.step ?? 'unknown'} (${age(r.lastCheckpoint.at, now)} ago)` : '-'],
    ['Age', `${age(r.createdAt, now)} (since ${time(r.createdAt)})`],
    ['UID', r.uid],
  ];
  if (r.source) rows.push(['Source', r.source.revision ? `${r.source.file} @ ${r.source.revision}` : r.source.file]);
  if (Object.keys(r.labels).length) rows.push(['Labels', Object.entries(r.labels).map(([k, v]) => `${k}=${v}`).join(', ')]);
  if (r.failure) rows.push(['Failure', `${r.failure.reason}: ${r.failure.message}`]);
  kv(document.getElementById('summary'), rows);
  kv(document.getElementById('spec'), r.spec);
}

function progress(r) {
  const names = metricNames(r.history);
  const wanted = metricSelect.value || names[0] || 'loss';
  metricSelect.replaceChildren(...names.map((n) => el('option', { value: n }, n)));
  if (names.includes(wanted)) metricSelect.value = wanted;
  const metric = metricSelect.value || 'loss';
  const points = r.history.reduce((n, s) => n + s.points.length, 0);
  document.getElementById('chart-empty').hidden = points > 0;
  chart.update(r.history, r.markers, metric, axisSelect.value);
  document.getElementById('markers').replaceChildren(
    ...r.markers.map((m) =>
      el('li', { class: `marker marker-${m.kind}`, dataset: { kind: m.kind, attempt: m.attempt, step: m.step ?? '' } }, `${time(m.at)} · ${m.message}${m.step !== null ? ` · step ${m.step}` : ''}`),
    ),
  );
}

/** Attempts as bars on one time axis, each split into the phases it went through. */
function timeline(r) {
  const box = document.getElementById('timeline');
  if (r.attempts.length === 0) {
    box.replaceChildren(el('p', { class: 'muted' }, 'No attempt has started yet.'));
    return;
  }
  const now = Date.now();
  const t0 = Math.min(...r.attempts.map((a) => Date.parse(a.start)));
  const t1 = Math.max(now * (r.attempts.some((a) => !a.end) ? 1 : 0), ...r.attempts.map((a) => Date.parse(a.end ?? a.phases.at(-1)?.end ?? a.start)));
  const span = Math.max(1, t1 - t0);
  const pct = (t) => `${(100 * (t - t0)) / span}%`;
  const rows = r.attempts.map((a) => {
    const lane = el('div', { class: 'lane' });
    for (const p of a.phases) {
      const start = Date.parse(p.start);
      const end = p.end ? Date.parse(p.end) : now;
      const seg = el('span', {
        class: `seg phase-${p.phase}`,
        title: `${p.phase}: ${time(p.start)} – ${p.end ? time(p.end) : 'now'}`,
        style: `left:${pct(start)};width:max(3px, ${(100 * (end - start)) / span}%)`,
        dataset: { phase: p.phase },
      });
      lane.append(seg);
    }
    for (const m of r.markers.filter((m) => m.attempt === a.attempt && m.generation === a.generation)) {
      lane.append(el('span', { class: `tick marker-${m.kind}`, title: m.message, style: `left:${pct(Date.parse(m.at))}` }));
    }
    const what = [a.instanceType, a.market, a.zone].filter(Boolean).join(', ');
    const label = el('div', { class: 'lane-label' }, `attempt ${a.attempt}`, el('span', { class: 'muted' }, ` g${a.generation}`));
    const info = el(
      'div',
      { class: 'lane-info muted' },
      `${a.instanceId ?? 'no instance yet'}${what ? ` (${what})` : ''} · ${time(a.start)} – ${a.end ? time(a.end) : 'running'}`,
      a.endReason ? ` · ${a.endReason}` : '',
      a.costUSD !== null ? ` · ${usd(a.costUSD)}` : '',
    );
    return el('div', { class: 'attempt', dataset: { attempt: a.attempt, generation: a.generation } }, label, el('div', {}, lane, info));
  });
  const phases = [...new Set(r.attempts.flatMap((a) => a.phases.map((p) => p.phase)))];
  const legend = el('div', { class: 'legend' }, ...phases.map((p) => el('span', {}, el('span', { class: `swatch phase-${p}` }), p)));
  box.replaceChildren(...rows, legend);
}

function tables(r) {
  const now = Date.now();
  fillRows(
    document.querySelector('#conditions tbody'),
    r.conditions.map((c) =>
      el('tr', { class: c.status === 'True' ? 'on' : '' }, el('td', {}, c.type), el('td', {}, c.status), el('td', {}, c.reason), el('td', { class: 'msg' }, c.message), el('td', {}, `${age(c.lastTransitionTime, now)} ago`)),
    ),
  );
  document.getElementById('faults').replaceChildren(
    ...r.faults.map((f) => el('p', { class: 'problems' }, `${f.reason} (attempt ${f.attempt}, since ${time(f.since)}): ${f.message}${f.file ? ` (file: ${f.file})` : ''}`)),
  );
  fillRows(
    document.querySelector('#checkpoints tbody'),
    r.checkpoints.map((c) => el('tr', {}, el('td', {}, c.id), el('td', { class: 'num' }, c.step ?? 'unknown'), el('td', { class: 'num' }, bytes(c.bytes)), el('td', { class: 'num' }, c.files), el('td', {}, `${age(c.at, now)} ago`))),
  );
  // Newest first: what just happened is what a person watching wants to see.
  fillRows(
    document.querySelector('#events tbody'),
    [...r.events].reverse().map((e) =>
      el(
        'tr',
        { class: e.result === 'error' || e.kind === 'error' ? 'err' : '', dataset: { seq: e.seq, action: e.action } },
        el('td', {}, time(e.at)),
        el('td', { class: 'num' }, e.attempt),
        el('td', {}, e.kind),
        el('td', {}, e.action),
        el('td', {}, e.result ?? ''),
        el('td', { class: 'msg' }, [e.message, e.requestId ? `(request ${e.requestId})` : ''].filter(Boolean).join(' ')),
      ),
    ),
  );
  document.getElementById('events-count').textContent = r.eventsTotal > r.events.length ? `(newest ${r.events.length} of ${r.eventsTotal})` : `(${r.eventsTotal})`;
  const log = document.getElementById('log');
  const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
  log.textContent = r.log ? r.log.lines.join('\n') : '';
  document.getElementById('log-title').textContent = r.log ? `(attempt ${r.log.attempt}, last ${r.log.lines.length} lines)` : '(no attempt yet)';
  if (atBottom) log.scrollTop = log.scrollHeight;
  document.getElementById('problems').replaceChildren(...r.problems.map((p) => el('li', {}, `could not read ${p}`)));
}

function render(r) {
  if (r.error) {
    const err = document.getElementById('error');
    err.hidden = false;
    err.textContent = r.error;
    return;
  }
  document.getElementById('error').hidden = true;
  latest = r;
  const phase = document.getElementById('phase');
  phase.replaceChildren(phaseBadge(r.phase));
  summary(r);
  progress(r);
  timeline(r);
  tables(r);
  document.body.dataset.loaded = 'true';
}

metricSelect.addEventListener('change', () => latest && progress(latest));
axisSelect.addEventListener('change', () => latest && progress(latest));
addEventListener('resize', () => chart.resize());
follow(`/api/runs/${encodeURIComponent(name)}/stream`, 'run', render);
