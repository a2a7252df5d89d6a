// Small canvas charts for the Live and Compare pages: a time-series line chart with gaps
// and a bar chart. Colours come from CSS custom properties on the canvas (style.css), so
// the charts follow the light/dark theme. Each draw also records what it drew in the
// canvas's data-* attributes (points, last, max): a summary for tests and debugging,
// next to the aria-label the caller sets for screen readers.

function themeColor(canvas, property) {
  return getComputedStyle(canvas).getPropertyValue(property).trim() || "#888";
}

/** Sizes the backing store to the element's CSS size; null while the canvas is hidden. */
function prepare(canvas) {
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  if (!width || !height) return null;
  const ratio = window.devicePixelRatio || 1;
  if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  ctx.font = `11px ${getComputedStyle(canvas).fontFamily}`;
  return { ctx, width, height };
}

/** The smallest 1, 2 or 5 times a power of ten at or above `value` (at least `floor`). */
function niceCeil(value, floor = 1) {
  const v = Math.max(value, floor);
  const magnitude = 10 ** Math.floor(Math.log10(v));
  const f = v / magnitude;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * magnitude;
}

function record(canvas, values) {
  const present = values.filter((v) => v !== null && Number.isFinite(v));
  canvas.dataset.points = String(present.length);
  canvas.dataset.max = String(present.length ? Math.max(...present) : 0);
}

/**
 * A line chart over time. `series`: [{color: "--css-var", points: [[t, value|null]]}];
 * `from`/`to`: the time range (ms); `format(v)`: axis labels; `floor`: the smallest y
 * range drawn. Nulls break the line (no data, e.g. no requests for a latency).
 */
export function drawLineChart(canvas, { series, from, to, format = String, floor = 1 }) {
  record(canvas, series.flatMap((s) => s.points.map((p) => p[1])));
  const last = series[0]?.points.at(-1)?.[1];
  canvas.dataset.last = last === null || last === undefined ? "" : String(last);
  const area = prepare(canvas);
  if (!area) return;
  const { ctx, width, height } = area;
  const left = 56;
  const right = 8;
  const top = 8;
  const bottom = 18;
  const max = niceCeil(Math.max(0, ...series.flatMap((s) => s.points.map((p) => p[1] ?? 0))), floor);
  const x = (t) => left + ((t - from) / (to - from)) * (width - left - right);
  const y = (v) => top + (1 - v / max) * (height - top - bottom);

  ctx.strokeStyle = themeColor(canvas, "--chart-grid");
  ctx.fillStyle = themeColor(canvas, "--chart-text");
  ctx.lineWidth = 1;
  ctx.textBaseline = "middle";
  ctx.textAlign = "right";
  for (const fraction of [0, 0.5, 1]) {
    const v = max * fraction;
    ctx.beginPath();
    ctx.moveTo(left, Math.round(y(v)) + 0.5);
    ctx.lineTo(width - right, Math.round(y(v)) + 0.5);
    ctx.stroke();
    ctx.fillText(format(v), left - 6, y(v));
  }
  ctx.textBaseline = "alphabetic";
  ctx.textAlign = "left";
  const span = (to - from) / 1000;
  ctx.fillText(span >= 120 ? `${Math.round(span / 60)} min ago` : `${Math.round(span)} s ago`, left, height - 4);
  ctx.textAlign = "right";
  ctx.fillText("now", width - right, height - 4);

  ctx.lineWidth = 2;
  ctx.lineJoin = "round";
  for (const s of series) {
    ctx.strokeStyle = ctx.fillStyle = themeColor(canvas, s.color);
    const shown = (p) => p && p[1] !== null && Number.isFinite(p[1]) && p[0] >= from;
    ctx.beginPath();
    s.points.forEach((p, i) => {
      if (!shown(p)) return;
      if (shown(s.points[i - 1])) ctx.lineTo(x(p[0]), y(p[1]));
      else ctx.moveTo(x(p[0]), y(p[1]));
    });
    ctx.stroke();
    // A point with no neighbour would draw nothing as a line: mark it with a dot.
    s.points.forEach((p, i) => {
      if (shown(p) && !shown(s.points[i - 1]) && !shown(s.points[i + 1])) {
        ctx.beginPath();
        ctx.arc(x(p[0]), y(p[1]), 2.5, 0, 2 * Math.PI);
        ctx.fill();
      }
    });
  }
}

/**
 * A bar chart. `bars`: [{label, value}] drawn left to right in `color` (a CSS custom
 * property), each labelled underneath and with `format(value)` on top.
 */
export function drawBarChart(canvas, { bars, color, format = String }) {
  record(canvas, bars.map((b) => b.value));
  canvas.dataset.last = bars.length ? String(bars.at(-1).value) : "";
  const area = prepare(canvas);
  if (!area) return;
  const { ctx, width, height } = area;
  const top = 16;
  const bottom = 18;
  const fill = themeColor(canvas, color);
  const text = themeColor(canvas, "--chart-text");
  const max = Math.max(0, ...bars.map((b) => b.value));
  ctx.strokeStyle = themeColor(canvas, "--chart-grid");
  ctx.beginPath();
  ctx.moveTo(0, height - bottom + 0.5);
  ctx.lineTo(width, height - bottom + 0.5);
  ctx.stroke();
  if (!bars.length || max <= 0) return;
  const slot = width / bars.length;
  const barWidth = Math.min(48, slot * 0.7);
  ctx.textAlign = "center";
  bars.forEach((bar, i) => {
    const cx = slot * (i + 0.5);
    const h = (bar.value / max) * (height - top - bottom);
    ctx.fillStyle = fill;
    ctx.fillRect(cx - barWidth / 2, height - bottom - h, barWidth, h);
    ctx.fillStyle = text;
    ctx.fillText(String(bar.label), cx, height - 4);
    if (bar.value > 0) ctx.fillText(format(bar.value), cx, height - bottom - h - 4);
  });
}
