// One inference request over the three ways a browser can send it: KServe REST with JSON
// tensors, REST with Triton's binary tensor extension, and gRPC-Web (ModelInfer, or
// ModelStreamInfer for decoupled models). Each reports the outputs, the body bytes it
// took each way and the time from send to the last byte read.
//
// A tensor here is {name, datatype, shape, values}; outputs come back the same way.

import { ApiError, request } from "./api.js";
import { grpcWebCall, grpcWebUnary } from "./grpc-web.js";
import { decodeInferResponse, decodeStreamResponse, encodeInferRequest } from "./kserve-proto.js";
import { decodeRaw, encodeRaw, fromContents, roundToType, stringifyJson } from "./tensors.js";

export const TRANSPORTS = [
  { value: "rest-json", label: "REST, JSON tensors" },
  { value: "rest-binary", label: "REST, binary tensors" },
  { value: "grpc-web", label: "gRPC-Web" },
];

const utf8 = new TextEncoder();
const utf8Decoder = new TextDecoder();

function inferPath(model) {
  return `/v2/models/${encodeURIComponent(model)}/infer`;
}

/** JSON output data, with floats rounded to their type so they equal the raw-decoded ones. */
function jsonOutput(output) {
  const data = output.data ?? [];
  return {
    name: output.name,
    datatype: output.datatype,
    shape: output.shape,
    values: output.datatype.startsWith("FP") || output.datatype === "BF16" ? data.map((v) => roundToType(output.datatype, v)) : data,
  };
}

async function restJson(model, tensors) {
  const body = utf8.encode(stringifyJson({
    inputs: tensors.map((t) => ({ name: t.name, shape: t.shape, datatype: t.datatype, data: t.values })),
  }));
  const start = performance.now();
  const response = await request(inferPath(model), { method: "POST", headers: { "Content-Type": "application/json" }, body });
  const bytes = new Uint8Array(await response.arrayBuffer());
  const ms = performance.now() - start;
  const answer = JSON.parse(utf8Decoder.decode(bytes));
  return { outputs: (answer.outputs ?? []).map(jsonOutput), requestBytes: body.length, responseBytes: bytes.length, ms };
}

async function restBinary(model, tensors) {
  const raws = tensors.map((t) => encodeRaw(t.datatype, t.values));
  const header = utf8.encode(JSON.stringify({
    inputs: tensors.map((t, i) => ({ name: t.name, shape: t.shape, datatype: t.datatype, parameters: { binary_data_size: raws[i].length } })),
    parameters: { binary_data_output: true },
  }));
  const body = new Uint8Array(header.length + raws.reduce((n, r) => n + r.length, 0));
  body.set(header);
  raws.reduce((offset, raw) => (body.set(raw, offset), offset + raw.length), header.length);
  const start = performance.now();
  const response = await request(inferPath(model), {
    method: "POST",
    headers: { "Content-Type": "application/octet-stream", "Inference-Header-Content-Length": String(header.length) },
    body,
  });
  const bytes = new Uint8Array(await response.arrayBuffer());
  const ms = performance.now() - start;
  // Without the header the whole answer is JSON (no output went binary).
  const jsonLength = Number(response.headers.get("Inference-Header-Content-Length") ?? bytes.length);
  const answer = JSON.parse(utf8Decoder.decode(bytes.subarray(0, jsonLength)));
  let offset = jsonLength;
  const outputs = (answer.outputs ?? []).map((output) => {
    const size = output.parameters?.binary_data_size;
    if (size === undefined) return jsonOutput(output);
    if (offset + size > bytes.length) throw new ApiError(`output ${output.name}: binary data runs past the answer`);
    const values = decodeRaw(output.datatype, bytes.subarray(offset, offset + size));
    offset += size;
    return { name: output.name, datatype: output.datatype, shape: output.shape, values };
  });
  return { outputs, requestBytes: body.length, responseBytes: bytes.length, ms };
}

function grpcRequest(model, tensors, parameters) {
  return encodeInferRequest({
    model_name: model,
    parameters,
    inputs: tensors.map((t) => ({ name: t.name, datatype: t.datatype, shape: t.shape })),
    raw_input_contents: tensors.map((t) => encodeRaw(t.datatype, t.values)),
  });
}

/** Outputs of a ModelInferResponse: raw entries when present, else typed contents. */
function grpcOutputs(response) {
  return response.outputs.map((output, i) => {
    const raw = response.raw_output_contents[i];
    const values = raw ? decodeRaw(output.datatype, raw) : fromContents(output.datatype, output.contents);
    return { name: output.name, datatype: output.datatype, shape: output.shape, values };
  });
}

async function grpcWeb(model, tensors) {
  const message = grpcRequest(model, tensors, {});
  const start = performance.now();
  const { message: answer, requestBytes, responseBytes } = await grpcWebUnary("ModelInfer", message);
  const ms = performance.now() - start;
  return { outputs: grpcOutputs(decodeInferResponse(answer)), requestBytes, responseBytes, ms };
}

/**
 * Sends one inference request over `transport` ("rest-json", "rest-binary", "grpc-web").
 * Resolves to {outputs, requestBytes, responseBytes, ms}.
 */
export function infer(transport, model, tensors) {
  if (transport === "rest-json") return restJson(model, tensors);
  if (transport === "rest-binary") return restBinary(model, tensors);
  if (transport === "grpc-web") return grpcWeb(model, tensors);
  throw new Error(`unknown transport ${transport}`);
}

/**
 * Streams one request over gRPC-Web ModelStreamInfer (the way to reach a decoupled
 * model from a browser): `onResponse({outputs, parameters, ms})` runs for each response
 * as it arrives, `ms` counted from the send. An error_message from the server ends the
 * call with an ApiError. Resolves to {count, requestBytes, responseBytes, ms}.
 */
export async function inferStream(model, tensors, parameters, onResponse, signal) {
  const message = grpcRequest(model, tensors, parameters);
  const start = performance.now();
  let count = 0;
  let failure = null;
  const sizes = await grpcWebCall("ModelStreamInfer", message, {
    signal,
    onMessage(bytes) {
      const streamed = decodeStreamResponse(bytes);
      if (streamed.error_message) {
        failure ??= new ApiError(streamed.error_message);
        return;
      }
      const response = streamed.infer_response;
      if (!response) return;
      count++;
      onResponse({ outputs: grpcOutputs(response), parameters: response.parameters, ms: performance.now() - start });
    },
  });
  if (failure) throw failure;
  return { count, ...sizes, ms: performance.now() - start };
}
