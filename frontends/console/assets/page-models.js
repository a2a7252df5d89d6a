// Models page: every model and version in the repository index with its state and
// reason, the ready ones' config (inputs, outputs, batching, instances, decoupled), and
// load/unload buttons when the server's model control mode is explicit.

import { getSettings, request } from "./api.js";
import { byId, h, replace, showError } from "./dom.js";
import { forget, modelInfo, repositoryIndex } from "./models.js";

const list = byId("models-list");
const errorBox = byId("models-error");
let generation = 0;

export function init() {
  byId("models-refresh").addEventListener("click", () => {
    forget();
    refresh();
  });
  const mode = getSettings().model_control_mode;
  byId("models-mode").textContent = mode === "explicit"
    ? "Model control is explicit: load and unload models here."
    : `Model control mode is '${mode}': the server decides what is loaded, so there are no load or unload buttons.`;
}

export function show() {
  refresh();
}

async function refresh() {
  const mine = ++generation;
  list.setAttribute("aria-busy", "true");
  try {
    const index = await repositoryIndex();
    const byName = new Map();
    for (const entry of index) {
      if (!byName.has(entry.name)) byName.set(entry.name, []);
      byName.get(entry.name).push(entry);
    }
    const names = [...byName.keys()].sort();
    const cards = await Promise.all(names.map((name) => card(name, byName.get(name))));
    if (mine !== generation) return; // a newer refresh owns the list
    replace(list, cards.length ? cards : h("p", {}, "The repository holds no models."));
    showError(errorBox, null);
  } catch (error) {
    if (mine === generation) showError(errorBox, error);
  } finally {
    if (mine === generation) list.removeAttribute("aria-busy");
  }
}

function stateBadge(entry) {
  const state = entry.state || "UNKNOWN";
  const label = entry.version ? `v${entry.version} ${state}` : state;
  return h("span", { class: `state ${state === "READY" ? "state-ready" : "state-other"}`, "data-testid": "model-state" }, label);
}

async function card(name, versions) {
  const ready = versions.some((v) => v.state === "READY");
  // Only a ready model has metadata and a config to read; asking for others is an error.
  const info = ready ? await modelInfo(name).catch((error) => error) : null;
  return h("article", { class: "card", "data-testid": "model-card", dataset: { model: name, state: ready ? "READY" : versions[0].state || "UNKNOWN" } },
    h("div", { class: "card-head" }, h("h3", {}, name), h("span", {}, versions.map(stateBadge))),
    versions.filter((v) => v.reason).map((v) => h("p", { class: "reason", "data-testid": "model-reason" }, v.version ? `v${v.version}: ${v.reason}` : v.reason)),
    info instanceof Error ? h("p", { class: "alert", role: "alert" }, `Cannot read this model's config: ${info.message}`) : null,
    info && !(info instanceof Error) ? details(info) : null,
    getSettings().model_control_mode === "explicit" ? actions(name, ready) : null,
  );
}

function batchingText(config) {
  const dynamic = config.dynamic_batching;
  if (!dynamic) return "no dynamic batching";
  const parts = ["dynamic batching"];
  if (dynamic.preferred_batch_size?.length) parts.push(`preferred ${dynamic.preferred_batch_size.join(", ")}`);
  if (Number(dynamic.max_queue_delay_microseconds)) parts.push(`max delay ${dynamic.max_queue_delay_microseconds} µs`);
  return parts.join(", ");
}

function instancesText(config) {
  const groups = config.instance_group ?? [];
  if (!groups.length) return "default";
  return groups.map((g) => `${g.count ?? 1} × ${(g.kind ?? "KIND_AUTO").replace(/^KIND_/, "")}${g.gpus?.length ? ` (GPU ${g.gpus.join(", ")})` : ""}`).join(", ");
}

function tensorTable(caption, tensors, optional) {
  return h("div", { class: "table-wrap" },
    h("table", {},
      h("caption", {}, caption),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Name"), h("th", { scope: "col" }, "Datatype"), h("th", { scope: "col" }, "Shape"))),
      h("tbody", {}, tensors.map((t) => h("tr", {},
        h("td", { class: "mono" }, t.name, optional.has(t.name) ? h("span", { class: "field-note" }, " (optional)") : null),
        h("td", { class: "mono" }, t.datatype),
        h("td", { class: "mono" }, `[${(t.shape ?? []).join(", ")}]`))))));
}

function details(info) {
  const { config } = info;
  const optional = new Set(info.inputs.filter((i) => i.optional).map((i) => i.name));
  const rows = [
    ["Backend", config.backend || config.platform || "—"],
    ["Max batch size", String(info.maxBatchSize)],
    ["Batching", config.sequence_batching ? "sequence batching" : batchingText(config)],
    ["Instances", config.platform === "ensemble" ? "ensemble (its steps' instances)" : instancesText(config)],
    ["Decoupled", info.decoupled ? "yes (streams responses)" : "no"],
  ];
  return h("div", { "data-testid": "model-config" },
    h("dl", {}, rows.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
    h("details", {},
      h("summary", {}, `${info.inputs.length} input${info.inputs.length === 1 ? "" : "s"}, ${info.outputs.length} output${info.outputs.length === 1 ? "" : "s"}`),
      tensorTable("Inputs", info.metadata.inputs ?? [], optional),
      tensorTable("Outputs", info.metadata.outputs ?? [], new Set())));
}

function actions(name, ready) {
  const verb = ready ? "unload" : "load";
  const button = h("button", {
    type: "button",
    class: ready ? "secondary" : null,
    "data-testid": `model-${verb}`,
    "aria-label": `${ready ? "Unload" : "Load"} ${name}`,
    on: { click: () => control(name, verb, button) },
  }, ready ? "Unload" : "Load");
  return h("div", { class: "actions" }, button);
}

async function control(name, verb, button) {
  button.disabled = true;
  button.textContent = verb === "load" ? "Loading…" : "Unloading…";
  let failure = null;
  try {
    await request(`/v2/repository/models/${encodeURIComponent(name)}/${verb}`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: "{}",
    });
  } catch (error) {
    failure = error;
  }
  forget(name);
  await refresh();
  // After the refresh, which clears the box when the index loads.
  if (failure) showError(errorBox, failure);
}
