// What the console knows about the served models: the repository index (fresh on every
// call) and each ready model's metadata and config (cached until a load, unload or
// refresh), plus the input specs the Try and Compare pages build requests from.

import { getJson, postJson } from "./api.js";

const infos = new Map();

/** The repository index: [{name, version, state, reason}]. */
export function repositoryIndex() {
  return postJson("/v2/repository/index", {});
}

/** Forgets cached metadata and configs (all, or one model's). */
export function forget(name) {
  if (name === undefined) infos.clear();
  else infos.delete(name);
}

/** Config `dims` may be numbers or (protobuf JSON's int64) strings. */
function numbers(list) {
  return (list ?? []).map(Number);
}

/**
 * A ready model's metadata and config, digested: {name, metadata, config, batching,
 * maxBatchSize, decoupled, inputs: [spec], outputs: [{name, datatype, shape}]}. An input
 * spec is {name, datatype, dims (per item, without the batch dimension), optional,
 * whole (BYTES with one element per item: the field text is one element)}.
 */
export function modelInfo(name) {
  if (!infos.has(name)) {
    const path = `/v2/models/${encodeURIComponent(name)}`;
    const promise = Promise.all([getJson(path), getJson(`${path}/config`)]).then(([metadata, config]) => digest(name, metadata, config));
    promise.catch(() => infos.delete(name)); // a failure is reported by the caller; retry next time
    infos.set(name, promise);
  }
  return infos.get(name);
}

function digest(name, metadata, config) {
  const maxBatchSize = Number(config.max_batch_size ?? 0);
  const batching = maxBatchSize > 0;
  const configInputs = new Map((config.input ?? []).map((i) => [i.name, i]));
  const inputs = (metadata.inputs ?? []).map((input) => {
    const dims = batching ? numbers(input.shape).slice(1) : numbers(input.shape);
    const fixed = dims.every((d) => d >= 0);
    return {
      name: input.name,
      datatype: input.datatype,
      dims,
      optional: Boolean(configInputs.get(input.name)?.optional),
      whole: input.datatype === "BYTES" && fixed && dims.reduce((a, b) => a * b, 1) === 1,
    };
  });
  const outputs = (metadata.outputs ?? []).map((o) => ({ name: o.name, datatype: o.datatype, shape: numbers(o.shape) }));
  return {
    name,
    metadata,
    config,
    maxBatchSize,
    batching,
    decoupled: Boolean(config.model_transaction_policy?.decoupled),
    inputs,
    outputs,
  };
}

/** Names of the models with a READY version, sorted, once each. */
async function readyModelNames() {
  const index = await repositoryIndex();
  return [...new Set(index.filter((m) => m.state === "READY").map((m) => m.name))].sort();
}

/** Digested infos of every ready model. */
export async function readyModelInfos() {
  return Promise.all((await readyModelNames()).map(modelInfo));
}

/** A decoupled generator following the engine's generation contract (text_input -> text_output). */
export function isGenerator(info) {
  return info.decoupled
    && info.inputs.some((i) => i.name === "text_input" && i.datatype === "BYTES")
    && info.outputs.some((o) => o.name === "text_output");
}

/**
 * What /v1/rerank accepts: two BYTES inputs (query and passage) and one FP32 score per
 * pair (a config `labels` parameter, when there is one, names a single label).
 */
export function isReranker(info) {
  const texts = info.inputs.filter((i) => i.datatype === "BYTES");
  const labels = info.config.parameters?.labels?.string_value;
  const oneLabel = labels === undefined || JSON.parse(labels).length === 1;
  return !info.decoupled && info.inputs.length === 2 && texts.length === 2 && oneLabel
    && info.outputs.some((o) => o.datatype === "FP32" && o.shape.at(-1) === 1);
}

/** What /v1/embeddings accepts: one required BYTES input and an FP32 output. */
export function isEmbedder(info) {
  const required = info.inputs.filter((i) => !i.optional);
  return !info.decoupled && required.length === 1 && required[0].datatype === "BYTES"
    && info.outputs.some((o) => o.datatype === "FP32");
}
