// gRPC-Web over fetch (application/grpc-web+proto): frames are one flag byte (0x00 data,
// 0x80 trailers), a 4-byte big-endian length and the payload. The response body is read
// with a stream reader so a server-streaming call's messages reach the caller as they
// arrive. The gRPC port is another origin; it answers CORS for any origin.

import { ApiError, authHeaders, grpcBase, reach, reportUnauthorized } from "./api.js";

const SERVICE = "inference.GRPCInferenceService";

const CODES = [
  "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
  "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
  "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
  "UNAUTHENTICATED",
];

function frame(flag, payload) {
  const out = new Uint8Array(5 + payload.length);
  out[0] = flag;
  new DataView(out.buffer).setUint32(1, payload.length, false);
  out.set(payload, 5);
  return out;
}

/** Trailers frame text ("grpc-status: 0\r\ngrpc-message: ...") as a lower-cased map. */
function parseTrailers(payload) {
  const trailers = {};
  for (const line of new TextDecoder().decode(payload).split("\r\n")) {
    const colon = line.indexOf(":");
    if (colon > 0) trailers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  return trailers;
}

/** grpc-message is percent-encoded on the wire. */
function decodeMessage(text) {
  try {
    return decodeURIComponent(text ?? "");
  } catch {
    return text;
  }
}

/** Accumulates response chunks and cuts complete frames off the front. */
class FrameReader {
  constructor() {
    this.buffer = new Uint8Array(0);
  }

  push(chunk) {
    const joined = new Uint8Array(this.buffer.length + chunk.length);
    joined.set(this.buffer);
    joined.set(chunk, this.buffer.length);
    this.buffer = joined;
  }

  /** The next complete frame {flag, payload}, or null until more bytes arrive. */
  next() {
    if (this.buffer.length < 5) return null;
    const length = new DataView(this.buffer.buffer, this.buffer.byteOffset).getUint32(1, false);
    if (this.buffer.length < 5 + length) return null;
    const flag = this.buffer[0];
    const payload = this.buffer.slice(5, 5 + length);
    this.buffer = this.buffer.subarray(5 + length);
    return { flag, payload };
  }
}

/**
 * Calls `method` of the inference service with one request message (Uint8Array) and
 * hands each response message to `onMessage` as it arrives. Resolves to the body sizes
 * {requestBytes, responseBytes} once the call ends with status OK; otherwise throws an
 * ApiError with the gRPC status and message.
 */
export async function grpcWebCall(method, message, { onMessage, signal } = {}) {
  const base = grpcBase();
  if (!base) throw new ApiError("This server announces no gRPC-Web port (settings.json has no grpc_web).");
  const body = frame(0x00, message);
  const response = await reach(`${base}/${SERVICE}/${method}`, {
    method: "POST",
    headers: { "Content-Type": "application/grpc-web+proto", "X-Grpc-Web": "1", ...authHeaders() },
    body,
    signal,
  });
  if (!response.ok) {
    throw new ApiError(`gRPC-Web ${method}: HTTP ${response.status} ${response.statusText} ${await response.text()}`.trim(), { status: response.status });
  }
  // A trailers-only answer (an error before any message) carries the status as headers.
  let status = response.headers.get("grpc-status");
  let statusMessage = response.headers.get("grpc-message");
  let responseBytes = 0;
  const frames = new FrameReader();
  const reader = response.body.getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    responseBytes += value.length;
    frames.push(value);
    for (let f = frames.next(); f; f = frames.next()) {
      if (f.flag & 0x80) {
        const trailers = parseTrailers(f.payload);
        status = trailers["grpc-status"] ?? status;
        statusMessage = trailers["grpc-message"] ?? statusMessage;
      } else if (f.flag !== 0) {
        throw new ApiError(`gRPC-Web ${method}: unexpected frame flag ${f.flag} (compressed frames are not requested)`);
      } else {
        onMessage?.(f.payload);
      }
    }
  }
  if (frames.buffer.length) throw new ApiError(`gRPC-Web ${method}: the answer ended inside a frame`);
  if (status === null) throw new ApiError(`gRPC-Web ${method}: the answer carried no grpc-status`);
  if (status !== "0") {
    const code = Number(status);
    const error = new ApiError(`gRPC ${CODES[code] ?? code}: ${decodeMessage(statusMessage)}`, { grpcStatus: code });
    if (error.unauthorized) reportUnauthorized(error);
    throw error;
  }
  return { requestBytes: body.length, responseBytes };
}

/** A unary call: resolves to {message, requestBytes, responseBytes}. */
export async function grpcWebUnary(method, message, options = {}) {
  const messages = [];
  const sizes = await grpcWebCall(method, message, { ...options, onMessage: (m) => messages.push(m) });
  if (messages.length !== 1) throw new ApiError(`gRPC-Web ${method}: expected one response message, got ${messages.length}`);
  return { message: messages[0], ...sizes };
}
