// Try it, rerank panel: scores candidate passages against a query in one /v1/rerank call
// (the Cohere/Jina shape) and lists them best first with their relevance scores.

import { postJson } from "./api.js";
import { busy, byId, formatMs, h, replace, setOptions } from "./dom.js";
import { isReranker } from "./models.js";

const form = byId("rerank-form");
const modelSelect = byId("rerank-model");
const result = byId("rerank-result");
const errorBox = byId("rerank-error");

async function run(event) {
  event.preventDefault();
  if (!modelSelect.value) return;
  const query = byId("rerank-query").value;
  const documents = byId("rerank-documents").value.split("\n").map((d) => d.trim()).filter(Boolean);
  await busy(byId("rerank-run"), errorBox, async () => {
    const start = performance.now();
    const answer = await postJson("/v1/rerank", { model: modelSelect.value, query, documents, return_documents: true });
    const ms = performance.now() - start;
    const rows = answer.results.map((r, rank) =>
      h("tr", { "data-testid": "rerank-row", dataset: { index: r.index, score: r.relevance_score } },
        h("td", {}, String(rank + 1)),
        h("td", { class: "num" }, r.relevance_score.toFixed(4)),
        h("td", {}, r.document?.text ?? documents[r.index])));
    replace(result,
      h("div", { class: "table-wrap" },
        h("table", {},
          h("thead", {}, h("tr", {}, h("th", {}, "Rank"), h("th", { class: "num" }, "Relevance"), h("th", {}, "Passage"))),
          h("tbody", {}, ...rows))),
      h("p", { class: "stats" },
        h("span", {}, "Passages ", h("strong", {}, documents.length)),
        h("span", {}, "Tokens ", h("strong", {}, answer.usage?.total_tokens ?? "—")),
        h("span", {}, "Time ", h("strong", {}, formatMs(ms)))));
  });
}

export function init() {
  form.addEventListener("submit", run);
}

export function update(infos) {
  const rerankers = infos.filter(isReranker);
  setOptions(modelSelect, rerankers.map((r) => ({ value: r.name })));
  for (const el of form.elements) el.disabled = !rerankers.length;
  byId("rerank-hint").textContent = rerankers.length
    ? "Scores each passage (one per line) against the query through /v1/rerank, best first."
    : "No re-ranking model is ready on this server (the full demo serves minilm_rerank).";
}
