// Try it, embeddings panel: embeds two texts in one /v1/embeddings call and shows the
// cosine similarity of the two vectors.

import { postJson } from "./api.js";
import { busy, byId, formatMs, h, replace, setOptions } from "./dom.js";
import { isEmbedder } from "./models.js";

const form = byId("embed-form");
const modelSelect = byId("embed-model");
const result = byId("embed-result");
const errorBox = byId("embed-error");

function cosine(a, b) {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  return dot / Math.sqrt(na * nb);
}

async function run(event) {
  event.preventDefault();
  const texts = [byId("embed-a").value, byId("embed-b").value];
  if (!modelSelect.value) return;
  await busy(byId("embed-run"), errorBox, async () => {
    const start = performance.now();
    const answer = await postJson("/v1/embeddings", { model: modelSelect.value, input: texts, encoding_format: "float" });
    const ms = performance.now() - start;
    const [a, b] = [...answer.data].sort((x, y) => x.index - y.index).map((d) => d.embedding);
    const value = cosine(a, b);
    replace(result,
      h("span", { class: "cosine" }, h("output", { "data-testid": "embed-cosine", dataset: { value } }, value.toFixed(6))),
      " cosine similarity",
      h("span", { class: "stats" },
        h("span", {}, "Dimensions ", h("strong", {}, a.length)),
        h("span", {}, "Prompt tokens ", h("strong", {}, answer.usage?.prompt_tokens ?? "—")),
        h("span", {}, "Time ", h("strong", {}, formatMs(ms)))));
  });
}

export function init() {
  form.addEventListener("submit", run);
}

export function update(infos) {
  const embedders = infos.filter(isEmbedder);
  setOptions(modelSelect, embedders.map((e) => ({ value: e.name })));
  for (const el of form.elements) el.disabled = !embedders.length;
  byId("embed-hint").textContent = embedders.length
    ? "Embeds two texts through /v1/embeddings and shows their cosine similarity."
    : "No embedding model is ready on this server (the full demo serves minilm).";
}
