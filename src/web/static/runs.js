// The runs table: every run in the state store, filtered by phase and label (kept in the URL, so a
// filtered view can be bookmarked), updated live from /api/stream.
import { age, el, fillRows, follow, phaseBadge, progressCell, time, usd } from './common.js';

const phaseSelect = document.getElementById('phase');
const labelInput = document.getElementById('label');
const tbody = document.querySelector('#runs tbody');
let latest = { runs: [], unreadable: [] };

const params = new URLSearchParams(location.search);
phaseSelect.value = params.get('phase') ?? '';
labelInput.value = params.get('label') ?? '';

function matches(run) {
  const phase = phaseSelect.value;
  if (phase && run.phase !== phase) return false;
  const label = labelInput.value.trim();
  if (!label) return true;
  return label.split(/[\s,]+/).filter(Boolean).every((want) => {
    const i = want.indexOf('=');
    return i < 0 ? want in run.labels : run.labels[want.slice(0, i)] === want.slice(i + 1);
  });
}

function row(r) {
  const now = Date.now();
  const cp = r.lastCheckpoint;
  const cost = r.budgetUSD !== null ? `${usd(r.costUSD)} / ${usd(r.budgetUSD)}` : usd(r.costUSD);
  const link = el('a', { href: `/runs/${encodeURIComponent(r.run)}` }, r.run);
  const warn = r.warnings.length ? el('span', { class: 'warn', title: r.warnings.join(', ') }, ` ⚠ ${r.warnings.join(', ')}`) : null;
  return el(
    'tr',
    { dataset: { run: r.run, phase: r.phase } },
    el('td', {}, link, warn),
    el('td', {}, phaseBadge(r.phase)),
    el('td', { class: 'num' }, `${r.attempt}`, r.interruptions ? el('span', { class: 'muted' }, ` (${r.interruptions} interrupted)`) : null),
    el('td', {}, progressCell(r.progress)),
    el('td', { class: 'num' }, cost),
    el('td', {}, cp ? `${cp.id} · ${cp.step !== null ? `step ${cp.step}` : 'step unknown'} · ${age(cp.at, now)} ago` : '-'),
    el('td', { title: time(r.createdAt) }, age(r.createdAt, now)),
    el('td', {}, ...Object.entries(r.labels).map(([k, v]) => el('span', { class: 'tag' }, `${k}=${v}`))),
  );
}

function render() {
  const shown = latest.runs.filter(matches);
  fillRows(tbody, shown.map(row));
  document.getElementById('empty').hidden = shown.length > 0;
  document.getElementById('count').textContent = `${shown.length} of ${latest.runs.length} runs`;
  document.getElementById('unreadable').replaceChildren(
    ...latest.unreadable.map((u) => el('li', {}, `${u.run}: status record ${u.file} is unreadable: ${u.problem} (runctl status says how to fix it)`)),
  );
}

function onFilter() {
  const q = new URLSearchParams();
  if (phaseSelect.value) q.set('phase', phaseSelect.value);
  if (labelInput.value.trim()) q.set('label', labelInput.value.trim());
  history.replaceState(null, '', q.size ? `?${q}` : location.pathname);
  render();
}

phaseSelect.addEventListener('change', onFilter);
labelInput.addEventListener('input', onFilter);
document.getElementById('filters').addEventListener('submit', (e) => e.preventDefault());
follow('/api/stream', 'runs', (data) => {
  latest = data;
  render();
});
// Ages move on between updates.
setInterval(render, 5000);
