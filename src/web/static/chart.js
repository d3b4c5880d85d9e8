// The progress curve: one metric (loss by default) as ONE line across every attempt, with the
// interruptions and resumes drawn on it. By step, each step shows the value of the newest attempt
// that reached it (the steps an interruption made the job redo are shown once, as redone); by
// time, the attempts follow one another with a gap for the time the run was not training.
import uPlot from '/vendor/uPlot.esm.js';

const COLORS = { interrupted: '#d9480f', resumed: '#2b8a3e', completed: '#1c7ed6', failed: '#c92a2a', suspended: '#868e96' };

/** Metric names present in the history, `loss` first. */
export function metricNames(history) {
  const names = new Set();
  for (const s of history) for (const p of s.points) for (const k of Object.keys(p.metrics)) names.add(k);
  return [...names].sort((a, b) => (a === 'loss' ? -1 : b === 'loss' ? 1 : a.localeCompare(b)));
}

/**
 * The points to plot: `{xs, ys, attempts, count}`. By step: attempt k contributes its points
 * below the first step of the next attempt that has any; by time: every point, with a null
 * between attempts so the line breaks where the run was down.
 */
export function curve(history, metric, axis) {
  const series = history.filter((s) => s.points.length > 0);
  const xs = [];
  const ys = [];
  const attempts = [];
  let count = 0;
  series.forEach((s, i) => {
    const next = series[i + 1];
    const until = axis === 'step' && next ? next.points[0].step : Infinity;
    const pts = s.points.filter((p) => p.step < until && typeof p.metrics[metric] === 'number');
    if (pts.length === 0) return;
    attempts.push(s.attempt);
    if (axis === 'time' && xs.length > 0) {
      xs.push((Date.parse(pts[0].time) / 1000 + xs[xs.length - 1]) / 2);
      ys.push(null);
    }
    for (const p of pts) {
      xs.push(axis === 'step' ? p.step : Date.parse(p.time) / 1000);
      ys.push(p.metrics[metric]);
      count++;
    }
  });
  return { xs, ys, attempts, count };
}

function markerX(m, axis) {
  if (axis === 'time') return Date.parse(m.at) / 1000;
  return m.step;
}

/** Draws the markers as vertical lines with a short label, on the chart's canvas. */
function markerPlugin(getMarkers, getAxis) {
  return {
    hooks: {
      draw: [
        (u) => {
          const ctx = u.ctx;
          const { top, height } = u.bbox;
          ctx.save();
          ctx.font = `${Math.round(11 * devicePixelRatio)}px system-ui, sans-serif`;
          let lane = 0;
          for (const m of getMarkers()) {
            const x = markerX(m, getAxis());
            if (x === null || x === undefined) continue;
            const px = Math.round(u.valToPos(x, 'x', true));
            if (px < u.bbox.left - 1 || px > u.bbox.left + u.bbox.width + 1) continue;
            ctx.strokeStyle = COLORS[m.kind] ?? '#333';
            ctx.fillStyle = ctx.strokeStyle;
            ctx.lineWidth = 2 * devicePixelRatio;
            ctx.setLineDash(m.kind === 'interrupted' ? [6 * devicePixelRatio, 4 * devicePixelRatio] : []);
            ctx.beginPath();
            ctx.moveTo(px, top);
            ctx.lineTo(px, top + height);
            ctx.stroke();
            const label = m.kind === 'interrupted' ? `interrupted (attempt ${m.attempt})` : m.kind === 'resumed' ? `resumed (attempt ${m.attempt})` : m.kind;
            // Interruptions label to the left of their line, resumes to the right: they are often a step apart.
            ctx.textAlign = m.kind === 'interrupted' || m.kind === 'completed' ? 'right' : 'left';
            const dx = (ctx.textAlign === 'right' ? -4 : 4) * devicePixelRatio;
            ctx.fillText(label, px + dx, top + (14 + 14 * (lane++ % 3)) * devicePixelRatio);
          }
          ctx.restore();
        },
      ],
    },
  };
}

/** A chart in `container` that `update(history, markers, metric, axis)` redraws in place. */
export class ProgressChart {
  constructor(container) {
    this.container = container;
    this.plot = null;
    this.key = '';
    this.markers = [];
    this.axis = 'step';
  }

  update(history, markers, metric, axis) {
    const c = curve(history, metric, axis);
    this.markers = markers.filter((m) => axis === 'time' || (m.step !== null && m.step !== undefined));
    this.axis = axis;
    const d = this.container.dataset;
    d.points = String(c.count);
    d.attempts = c.attempts.join(',');
    d.markers = this.markers.map((m) => `${m.kind}@${axis === 'time' ? m.at : m.step}`).join(',');
    d.metric = metric;
    d.axis = axis;
    const key = `${metric}/${axis}`;
    const data = [c.xs, c.ys];
    if (this.plot && this.key === key) {
      this.plot.setData(data);
      return;
    }
    this.plot?.destroy();
    this.key = key;
    const width = Math.max(320, this.container.clientWidth || 800);
    this.plot = new uPlot(
      {
        width,
        height: 300,
        scales: { x: { time: axis === 'time' } },
        axes: [{ label: axis === 'time' ? 'time' : 'step' }, { label: metric }],
        series: [{ label: axis }, { label: metric, stroke: '#5c7cfa', width: 1.5, spanGaps: false, points: { show: false } }],
        plugins: [markerPlugin(() => this.markers, () => this.axis)],
      },
      data,
      this.container,
    );
  }

  resize() {
    if (this.plot) this.plot.setSize({ width: Math.max(320, this.container.clientWidth), height: 300 });
  }
}
