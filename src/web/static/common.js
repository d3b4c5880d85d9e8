// Helpers shared by the dashboard's pages. Everything from the server is put into the page as
// text (textContent), never as HTML: run names, messages and log lines are data, not markup.

/** Creates an element with text or children: el('td', {class: 'x'}, 'text', otherNode). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') node.className = v;
    else if (k === 'dataset') Object.assign(node.dataset, v);
    else node.setAttribute(k, String(v));
  }
  for (const c of children) {
    if (c === undefined || c === null) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

/** `3m12s`, `2h05m`, `4d06h`: the same short ages the CLI prints. */
export function age(iso, now = Date.now()) {
  if (!iso) return '-';
  return duration(Math.max(0, now - Date.parse(iso)));
}

export function duration(ms) {
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(s % 60).padStart(2, '0')}s`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h}h${String(m % 60).padStart(2, '0')}m`;
  return `${Math.floor(h / 24)}d${String(h % 24).padStart(2, '0')}h`;
}

export function usd(n) {
  if (n === null || n === undefined) return '-';
  return n < 0.01 && n > 0 ? `$${n.toFixed(4)}` : `$${n.toFixed(2)}`;
}

export function bytes(n) {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = -1;
  do {
    v /= 1024;
    i++;
  } while (v >= 1024 && i < units.length - 1);
  return `${v.toFixed(1)} ${units[i]}`;
}

export function time(iso) {
  if (!iso) return '-';
  const d = new Date(iso);
  return d.toISOString().replace('T', ' ').slice(0, 19) + 'Z';
}

export function loss(x) {
  if (x === undefined || x === null) return '';
  return Math.abs(x) >= 100 ? x.toFixed(1) : x.toPrecision(4);
}

/** A progress bar with its numbers: `[####  ] 120/400 loss 0.512`. */
export function progressCell(p) {
  if (!p) return el('span', { class: 'muted' }, '-');
  const wrap = el('span', { class: 'progress' });
  if (p.total) {
    const pct = Math.max(0, Math.min(100, (100 * p.step) / p.total));
    const bar = el('span', { class: 'bar', title: `${pct.toFixed(0)}%` });
    bar.append(el('span', { class: 'fill', style: `width:${pct}%` }));
    wrap.append(bar, ` ${p.step}/${p.total}`);
  } else wrap.append(`step ${p.step}`);
  if (p.loss !== undefined) wrap.append(el('span', { class: 'loss' }, ` loss ${loss(p.loss)}`));
  return wrap;
}

export function phaseBadge(phase) {
  return el('span', { class: `phase phase-${phase}` }, phase);
}

/** Replaces a table body's rows. */
export function fillRows(tbody, rows) {
  tbody.replaceChildren(...rows);
}

/**
 * Follows a server-sent event stream: calls `on(data)` with each `name` event's parsed JSON and
 * shows the connection's state in #live. EventSource reconnects by itself after a drop.
 */
export function follow(url, name, on) {
  const live = document.getElementById('live');
  const set = (state, text) => {
    live.dataset.state = state;
    live.textContent = text;
  };
  const source = new EventSource(url);
  source.addEventListener('open', () => set('live', 'live'));
  source.addEventListener('error', () => set('down', 'reconnecting…'));
  source.addEventListener(name, (e) => {
    set('live', 'live');
    on(JSON.parse(e.data));
  });
  source.addEventListener('problem', (e) => set('down', `state unreadable: ${JSON.parse(e.data).error}`));
  return source;
}
