// Compare page: one request sent over REST-JSON, REST-binary and gRPC-Web from the
// browser, K times each, interleaved so that no transport gets the quiet moments; shows
// median and p90 time, body bytes each way, and checks that the three answers are equal.

import { byId, formatBytes, formatMs, h, replace, setOptions, showError } from "./dom.js";
import { TRANSPORTS, infer } from "./infer.js";
import { readyModelInfos } from "./models.js";
import { isNumeric, sameValues } from "./tensors.js";

const form = byId("compare-form");
const modelSelect = byId("compare-model");
const nSelect = byId("compare-n");
const kInput = byId("compare-k");
const runButton = byId("compare-run");
const progress = byId("compare-progress");
const rows = byId("compare-rows");
const check = byId("compare-check");
const errorBox = byId("compare-error");

let candidates = [];

/**
 * Models a comparison can fill with generated numbers: unary, not stateful, every
 * input numeric (BYTES and BOOL need meaningful values).
 */
function comparable(info) {
  return !info.decoupled && !info.config.sequence_batching && info.inputs.length > 0
    && info.inputs.every((i) => isNumeric(i.datatype));
}

function variable(info) {
  return info.inputs.some((i) => i.dims.includes(-1));
}

/** Random values that fit any numeric type (small integers, or floats in [-1, 1)). */
function randomValues(datatype, count) {
  const float = datatype.startsWith("FP") || datatype === "BF16";
  return Array.from({ length: count }, () => (float ? Math.fround(Math.random() * 2 - 1) : Math.floor(Math.random() * 100)));
}

/** The request: each input at its fixed dims, the first -1 of each as N, others 1. */
function makeTensors(info, n) {
  return info.inputs.filter((i) => !i.optional).map((spec) => {
    let first = true;
    const dims = spec.dims.map((d) => {
      if (d >= 0) return d;
      const size = first ? n : 1;
      first = false;
      return size;
    });
    const count = dims.reduce((a, b) => a * b, 1);
    return { name: spec.name, datatype: spec.datatype, shape: info.batching ? [1, ...dims] : dims, values: randomValues(spec.datatype, count) };
  });
}

function quantile(values, q) {
  const sorted = [...values].sort((a, b) => a - b);
  const position = (sorted.length - 1) * q;
  const low = Math.floor(position);
  const high = Math.ceil(position);
  return sorted[low] + (sorted[high] - sorted[low]) * (position - low);
}

function sameOutputs(a, b) {
  return a.length === b.length && a.every((o, i) => o.name === b[i].name && sameValues(o.values, b[i].values));
}

function bytesCell(testid, value, max) {
  const bar = h("span", { class: "bar", "aria-hidden": "true" });
  bar.style.width = `${Math.max(2, (value / max) * 80)}px`; // CSSOM, which the CSP allows
  return h("td", { class: "num" }, h("span", { class: "bar-cell" }, bar, h("span", { "data-testid": testid, dataset: { value } }, formatBytes(value))));
}

function render(results, info, n) {
  const maxBytes = Math.max(...results.flatMap((r) => [r.requestBytes, r.responseBytes]));
  replace(rows, results.map((r) => h("tr", { "data-testid": `compare-row-${r.transport.value}` },
    h("th", { scope: "row" }, r.transport.label),
    h("td", { class: "num", "data-testid": "compare-median", dataset: { value: r.median } }, formatMs(r.median)),
    h("td", { class: "num", "data-testid": "compare-p90", dataset: { value: r.p90 } }, formatMs(r.p90)),
    bytesCell("compare-req-bytes", r.requestBytes, maxBytes),
    bytesCell("compare-resp-bytes", r.responseBytes, maxBytes))));
  const shape = (t) => `${t.datatype} [${t.shape.join(", ")}]`;
  byId("compare-caption").textContent = `${info.name}, inputs ${makeTensors(info, n).map(shape).join(" and ")}, ${results[0].times.length} timed runs each.`;
}

async function run(event) {
  event.preventDefault();
  const info = candidates.find((c) => c.name === modelSelect.value);
  if (!info) return;
  const n = Number(nSelect.value);
  const k = Math.min(500, Math.max(1, Number(kInput.value) || 1));
  showError(errorBox, null);
  check.textContent = "";
  check.className = "";
  runButton.disabled = true;
  try {
    const tensors = makeTensors(info, n);
    const results = TRANSPORTS.map((transport) => ({ transport, times: [], outputs: null }));
    // One warm-up each (connections, the gRPC port's CORS preflight) keeps set-up out of the times.
    for (const r of results) r.outputs = (await infer(r.transport.value, info.name, tensors)).outputs;
    let mismatch = results.find((r) => !sameOutputs(r.outputs, results[0].outputs));
    for (let round = 1; round <= k; round++) {
      progress.textContent = `Round ${round} of ${k}…`;
      for (const r of results) {
        const answer = await infer(r.transport.value, info.name, tensors);
        r.times.push(answer.ms);
        r.requestBytes = answer.requestBytes;
        r.responseBytes = answer.responseBytes;
        if (!sameOutputs(answer.outputs, results[0].outputs)) mismatch ??= r;
      }
    }
    for (const r of results) {
      r.median = quantile(r.times, 0.5);
      r.p90 = quantile(r.times, 0.9);
    }
    render(results, info, n);
    progress.textContent = `Done: ${k} runs per transport.`;
    const values = results[0].outputs.reduce((sum, o) => sum + o.values.length, 0);
    check.className = mismatch ? "check-bad" : "check-ok";
    check.textContent = mismatch
      ? `Mismatch: ${mismatch.transport.label} returned different outputs from ${results[0].transport.label}.`
      : `✓ All three transports returned identical outputs (${results[0].outputs.length} output${results[0].outputs.length === 1 ? "" : "s"}, ${values} values).`;
  } catch (error) {
    progress.textContent = "";
    showError(errorBox, error);
  } finally {
    runButton.disabled = false;
  }
}

function syncN() {
  const info = candidates.find((c) => c.name === modelSelect.value);
  nSelect.disabled = !info || !variable(info);
}

export function init() {
  form.addEventListener("submit", run);
  modelSelect.addEventListener("change", syncN);
}

export async function show() {
  try {
    candidates = (await readyModelInfos()).filter(comparable);
    const before = modelSelect.value;
    setOptions(modelSelect, candidates.map((c) => ({ value: c.name })));
    if (!before && candidates.some((c) => c.name === "identity_fp32")) modelSelect.value = "identity_fp32";
    runButton.disabled = !candidates.length;
    syncN();
  } catch (error) {
    showError(errorBox, error);
  }
}
