// Try it, infer panel: a form built from the chosen model's metadata (one field per
// input), sent as REST-JSON, REST-binary or gRPC-Web; decoupled models stream over
// gRPC-Web ModelStreamInfer and show each response as it arrives.

import { byId, formatBytes, formatMs, h, replace, setOptions, showError } from "./dom.js";
import { TRANSPORTS, infer, inferStream } from "./infer.js";
import { modelInfo } from "./models.js";
import { formatValues, parseValues, resolveShape } from "./tensors.js";

const STREAM = { value: "grpc-web-stream", label: "gRPC-Web stream (ModelStreamInfer)" };

const form = byId("infer-form");
const modelSelect = byId("infer-model");
const transportSelect = byId("infer-transport");
const fields = byId("infer-fields");
const sendButton = byId("infer-send");
const result = byId("infer-result");
const errorBox = byId("infer-error");

let info = null;
/** The model whose form is shown or being built: choosing it again keeps what was typed. */
let formFor = null;

/** A starting value that the model accepts, so Send works at once. */
function defaultValue(spec) {
  if (spec.optional) return "";
  if (spec.whole) return "Hello, Nereid!";
  const fixed = spec.dims.every((d) => d >= 0);
  const count = fixed ? spec.dims.reduce((a, b) => a * b, 1) : 4;
  if (spec.datatype === "BOOL") return Array(count).fill("true").join(", ");
  return Array.from({ length: count }, (_, i) => (fixed ? i : i + 1)).join(", ");
}

function field(spec) {
  const id = `infer-input-${spec.name}`;
  const what = `${spec.datatype}, dims [${spec.dims.join(", ")}]${spec.optional ? ", optional: leave empty to omit" : ""}${spec.whole ? ", one text" : ""}`;
  return h("label", { for: id },
    h("span", { class: "mono" }, spec.name, " ", h("span", { class: "field-note" }, `(${what})`)),
    h("input", { id, type: "text", value: defaultValue(spec), "data-testid": id, dataset: { input: spec.name }, spellcheck: "false", autocomplete: "off" }));
}

async function selectModel() {
  const name = modelSelect.value;
  if (!name || name === formFor) return;
  formFor = name;
  let chosen;
  try {
    chosen = await modelInfo(name);
  } catch (error) {
    formFor = null;
    showError(errorBox, error);
    return;
  }
  if (formFor !== name) return; // another model was chosen meanwhile
  info = chosen;
  showError(errorBox, null);
  setOptions(transportSelect, info.decoupled ? [STREAM] : TRANSPORTS);
  replace(fields, h("legend", {}, `Inputs of ${name}`), info.inputs.map(field));
  replace(result);
}

function tensorsFromForm() {
  const tensors = [];
  for (const spec of info.inputs) {
    const text = fields.querySelector(`[data-input="${CSS.escape(spec.name)}"]`).value;
    if (!text.trim()) {
      if (spec.optional) continue;
      throw new Error(`${spec.name} needs a value.`);
    }
    const values = parseValues(text, spec.datatype, spec.whole);
    tensors.push({ name: spec.name, datatype: spec.datatype, shape: resolveShape(spec.name, spec.dims, values.length, info.batching), values });
  }
  return tensors;
}

function stats(transport, r) {
  return h("p", { class: "stats", "data-testid": "infer-stats" },
    h("span", {}, "Sent as ", h("strong", {}, transport)),
    h("span", {}, "Request body ", h("strong", { "data-testid": "infer-request-bytes", dataset: { value: r.requestBytes } }, formatBytes(r.requestBytes))),
    h("span", {}, "Response body ", h("strong", { "data-testid": "infer-response-bytes", dataset: { value: r.responseBytes } }, formatBytes(r.responseBytes))),
    h("span", {}, "Time ", h("strong", { "data-testid": "infer-time" }, formatMs(r.ms))));
}

function outputsTable(outputs) {
  return h("div", { class: "table-wrap" },
    h("table", { "data-testid": "infer-outputs" },
      h("caption", {}, "Outputs"),
      h("thead", {}, h("tr", {}, ["Name", "Datatype", "Shape", "Values"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, outputs.map((o) => h("tr", {},
        h("td", { class: "mono" }, o.name),
        h("td", { class: "mono" }, o.datatype),
        h("td", { class: "mono" }, `[${o.shape.join(", ")}]`),
        h("td", { class: "values", "data-testid": `infer-output-${o.name}` }, formatValues(o.values)))))));
}

function describeResponse(outputs) {
  return outputs.map((o) => `${o.name} = ${formatValues(o.values, 16)}`).join("; ") || "no outputs";
}

async function stream(tensors) {
  const list = h("ol", { class: "responses", "data-testid": "infer-responses", "aria-label": "Responses as they arrived" });
  const status = h("p", { class: "hint", "data-testid": "infer-stream-status" }, "Streaming…");
  replace(result, status, list);
  const r = await inferStream(info.name, tensors, {}, ({ outputs, parameters, ms }) => {
    const final = parameters.triton_final_response === true ? " (final)" : "";
    list.append(h("li", { "data-testid": "infer-response" }, `+${formatMs(ms)}: ${describeResponse(outputs)}${final}`));
  });
  status.textContent = `The stream ended after ${r.count} response${r.count === 1 ? "" : "s"}.`;
  result.prepend(stats(STREAM.label, r));
}

async function send(event) {
  event.preventDefault();
  if (!info) return;
  showError(errorBox, null);
  sendButton.disabled = true;
  try {
    const tensors = tensorsFromForm();
    const transport = transportSelect.value;
    if (transport === STREAM.value) {
      await stream(tensors);
    } else {
      const label = transportSelect.selectedOptions[0].textContent;
      const r = await infer(transport, info.name, tensors);
      replace(result, stats(label, r), outputsTable(r.outputs));
    }
  } catch (error) {
    showError(errorBox, error);
  } finally {
    sendButton.disabled = false;
  }
}

export function init() {
  form.addEventListener("submit", send);
  modelSelect.addEventListener("change", selectModel);
}

/** Offers the ready models; rebuilds the form only when the chosen model changed. */
export async function update(infos) {
  const before = modelSelect.value;
  setOptions(modelSelect, infos.map((i) => ({ value: i.name })));
  sendButton.disabled = !infos.length;
  if (!infos.length) {
    info = null;
    formFor = null;
    replace(fields, h("legend", {}, "Inputs"), h("p", {}, "No model is ready on this server."));
    return;
  }
  if (!before && infos.some((i) => i.name === "simple")) modelSelect.value = "simple";
  await selectModel();
}
