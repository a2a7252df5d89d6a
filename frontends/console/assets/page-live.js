// Live page: samples the server's Prometheus metrics (/console/metrics) and statistics
// (/v2/models/stats) every 1.5 s from the moment the console starts, whichever page is
// shown, and draws the last 5 minutes (or less, since the console opened): requests/s, queue depth, p50/p99 latency (from
// histogram bucket deltas over the last 10 s), tokens/s and the batch sizes executed.

import { getJson, keyPending, request } from "./api.js";
import { drawBarChart, drawLineChart } from "./charts.js";
import { byId, formatMs, setOptions, showError } from "./dom.js";
import { histogramQuantile, isSeries, parsePrometheus } from "./metrics.js";

const SAMPLE_MS = 1500;
const HISTORY_MS = 5 * 60 * 1000;
/** The narrowest time axis: a console just opened fills it instead of a 5-minute one. */
const MIN_SPAN_MS = 60 * 1000;
const LATENCY_WINDOW_MS = 10 * 1000;

const page = byId("page-live");
const select = byId("live-model");
const errorBox = byId("live-error");

/** [{t, models: Map(model -> counters)}], oldest first, trimmed to HISTORY_MS. */
const samples = [];
let inFlight = false;

function emptyCounters() {
  return { requests: 0, pending: 0, inferences: 0, executions: 0, tokens: null, buckets: new Map(), batches: new Map() };
}

function addTo(map, key, value) {
  map.set(key, (map.get(key) ?? 0) + value);
}

/** Per-model counters from the metrics text and the statistics JSON (versions summed). */
function digest(metricsText, stats) {
  const models = new Map();
  const counters = (name) => {
    if (!models.has(name)) models.set(name, emptyCounters());
    return models.get(name);
  };
  for (const { name, labels, value } of parsePrometheus(metricsText ?? "")) {
    if (!labels.model) continue;
    const c = counters(labels.model);
    if (isSeries(name, "nv_inference_request_success") || isSeries(name, "nv_inference_request_failure")) c.requests += value;
    else if (name === "nv_inference_pending_request_count") c.pending += value;
    else if (isSeries(name, "nv_inference_count")) c.inferences += value;
    else if (isSeries(name, "nv_inference_exec_count")) c.executions += value;
    else if (isSeries(name, "nv_llm_generated_tokens")) c.tokens = (c.tokens ?? 0) + value;
    else if (name === "nereid_inference_request_duration_seconds_bucket") addTo(c.buckets, labels.le === "+Inf" ? Infinity : Number(labels.le), value);
  }
  for (const model of stats?.model_stats ?? []) {
    const c = counters(model.name);
    for (const b of model.batch_stats ?? []) addTo(c.batches, Number(b.batch_size), Number(b.compute_infer?.count ?? 0));
  }
  return models;
}

/** The counters of one model, or of all models summed when `model` is "". */
function pick(sample, model) {
  if (model) return sample.models.get(model) ?? emptyCounters();
  const total = emptyCounters();
  for (const c of sample.models.values()) {
    total.requests += c.requests;
    total.pending += c.pending;
    total.inferences += c.inferences;
    total.executions += c.executions;
    if (c.tokens !== null) total.tokens = (total.tokens ?? 0) + c.tokens;
    for (const [le, n] of c.buckets) addTo(total.buckets, le, n);
    for (const [size, n] of c.batches) addTo(total.batches, size, n);
  }
  return total;
}

/** A counter's rise per second; null across a reset (a model reloaded). */
function rate(before, after, seconds) {
  const delta = after - before;
  return delta < 0 ? null : delta / seconds;
}

function quantiles(before, after) {
  const buckets = [...after.buckets.entries()]
    .map(([le, n]) => [le, n - (before.buckets.get(le) ?? 0)])
    .sort((a, b) => a[0] - b[0]);
  if (buckets.some(([, n]) => n < 0)) return [null, null];
  const toMs = (v) => (v === null ? null : v * 1000);
  return [toMs(histogramQuantile(0.5, buckets)), toMs(histogramQuantile(0.99, buckets))];
}

/** The chart series and figures of the selected model over the samples held. */
function derive(model) {
  const picked = samples.map((s) => ({ t: s.t, c: pick(s, model) }));
  const rps = [];
  const queue = picked.map(({ t, c }) => [t, c.pending]);
  const p50 = [];
  const p99 = [];
  const tps = [];
  let windowStart = 0;
  for (let i = 1; i < picked.length; i++) {
    const { t, c } = picked[i];
    const previous = picked[i - 1];
    const seconds = (t - previous.t) / 1000;
    rps.push([t, rate(previous.c.requests, c.requests, seconds)]);
    // The token counter appears with a model's first generation: no rate until it has two samples.
    tps.push([t, c.tokens === null || previous.c.tokens === null ? null : rate(previous.c.tokens, c.tokens, seconds)]);
    while (picked[windowStart].t < t - LATENCY_WINDOW_MS) windowStart++;
    const [q50, q99] = quantiles(picked[Math.min(windowStart, i - 1)].c, c);
    p50.push([t, q50]);
    p99.push([t, q99]);
  }
  const first = picked[0]?.c ?? emptyCounters();
  const last = picked.at(-1)?.c ?? emptyCounters();
  const bars = [...last.batches.entries()]
    .map(([size, n]) => ({ label: size, value: n - (first.batches.get(size) ?? 0) }))
    .filter((b) => b.value > 0)
    .sort((a, b) => a.label - b.label);
  const executions = last.executions - first.executions;
  const meanBatch = executions > 0 ? (last.inferences - first.inferences) / executions : null;
  return { rps, queue, p50, p99, tps, bars, meanBatch, generates: last.tokens !== null };
}

const fixed = (digits) => (v) => (v === null || v === undefined ? "—" : v.toFixed(digits));
/** Axis labels: two significant digits, whole numbers from 100 up. */
const axis = (v) => (Math.abs(v) >= 100 ? v.toFixed(0) : String(Number(v.toPrecision(2))));
const axisMs = (v) => (v === 0 ? "0" : v < 1000 ? `${axis(v)} ms` : `${axis(v / 1000)} s`);

function render() {
  if (page.hidden) return;
  const now = Date.now();
  const from = Math.max(now - HISTORY_MS, Math.min(samples[0]?.t ?? now, now - MIN_SPAN_MS));
  const d = derive(select.value);
  const latest = (series) => series.at(-1)?.[1] ?? null;
  const peak = (series) => Math.max(0, ...series.map((p) => p[1] ?? 0));

  byId("live-rps").textContent = fixed(1)(latest(d.rps));
  byId("live-queue").textContent = fixed(0)(latest(d.queue));
  byId("live-p50").textContent = formatMs(latest(d.p50));
  byId("live-p99").textContent = formatMs(latest(d.p99));
  byId("live-tps").textContent = d.generates ? fixed(1)(latest(d.tps)) : "—";
  byId("live-batch").textContent = fixed(2)(d.meanBatch);

  const chart = (id, label, options, summary) => {
    const canvas = byId(id);
    drawLineChart(canvas, { from, to: now, ...options });
    canvas.setAttribute("aria-label", `${label}, recent history: ${summary}`);
  };
  chart("chart-rps", "Requests per second", { series: [{ color: "--series-1", points: d.rps }], format: axis },
    `now ${fixed(1)(latest(d.rps))}, peak ${fixed(1)(peak(d.rps))}`);
  chart("chart-queue", "Queue depth", { series: [{ color: "--series-1", points: d.queue }], format: axis, floor: 2 },
    `now ${fixed(0)(latest(d.queue))}, peak ${fixed(0)(peak(d.queue))}`);
  chart("chart-latency", "Latency", {
    series: [{ color: "--series-1", points: d.p50 }, { color: "--series-2", points: d.p99 }],
    format: axisMs,
    floor: 1,
  }, `p50 ${formatMs(latest(d.p50))}, p99 ${formatMs(latest(d.p99))}`);
  chart("chart-tps", "Tokens per second", { series: [{ color: "--series-1", points: d.tps }], format: axis },
    d.generates ? `now ${fixed(1)(latest(d.tps))}, peak ${fixed(1)(peak(d.tps))}` : "no generation model has produced tokens");

  const batch = byId("chart-batch");
  drawBarChart(batch, { bars: d.bars, color: "--series-3", format: (v) => String(v) });
  batch.setAttribute("aria-label", d.bars.length
    ? `Batch sizes executed recently: ${d.bars.map((b) => `size ${b.label}: ${b.value} times`).join(", ")}`
    : "Batch sizes: no batch executed recently");
}

function updateModelOptions() {
  const names = [...new Set(samples.flatMap((s) => [...s.models.keys()]))].sort();
  const current = [...select.options].map((o) => o.value).join("\n");
  const wanted = ["", ...names];
  if (current === wanted.join("\n")) return;
  setOptions(select, wanted.map((name) => ({ value: name, label: name || "All models" })));
}

async function tick() {
  if (inFlight || keyPending()) return;
  inFlight = true;
  try {
    const [metrics, stats] = await Promise.allSettled([
      request("/console/metrics").then((r) => r.text()),
      getJson("/v2/models/stats"),
    ]);
    const failure = [metrics, stats].find((r) => r.status === "rejected");
    showError(errorBox, failure ? failure.reason : null);
    if (metrics.status === "rejected" && stats.status === "rejected") return;
    const t = Date.now();
    samples.push({ t, models: digest(metrics.value, stats.value) });
    while (samples.length > 2 && samples[1].t < t - HISTORY_MS) samples.shift();
    updateModelOptions();
    render();
  } catch (error) {
    showError(errorBox, error);
  } finally {
    inFlight = false;
  }
}

export function init() {
  select.addEventListener("change", render);
  window.addEventListener("resize", render);
  tick();
  setInterval(tick, SAMPLE_MS);
}

export function show() {
  render();
}
