// Hand-written protobuf encoding of the KServe v2 messages the console sends and reads
// (proto/protos/grpc_service.proto): ModelInferRequest out; ModelInferResponse and
// ModelStreamInferResponse in. Only the wire format those messages need: varints,
// length-delimited fields, packed repeated scalars, fixed32/64, and map<string,
// InferParameter> as repeated {1: key, 2: value} entry messages.

const VARINT = 0;
const FIXED64 = 1;
const LENGTH = 2;
const FIXED32 = 5;

const utf8 = new TextEncoder();
const utf8Decoder = new TextDecoder();

/** Serialises fields in order into one Uint8Array. */
class Writer {
  constructor() {
    this.chunks = [];
  }

  /** A varint from a non-negative Number (up to 2^53) or any BigInt (two's complement, 64-bit). */
  varint(value) {
    const out = [];
    if (typeof value === "bigint" || value < 0) {
      let v = BigInt.asUintN(64, BigInt(value));
      while (v >= 0x80n) {
        out.push(Number(v & 0x7fn) | 0x80);
        v >>= 7n;
      }
      out.push(Number(v));
    } else {
      let v = value;
      while (v >= 0x80) {
        out.push((v % 0x80) | 0x80);
        v = Math.floor(v / 0x80);
      }
      out.push(v);
    }
    this.chunks.push(Uint8Array.from(out));
  }

  tag(field, wire) {
    this.varint(field * 8 + wire);
  }

  /** A length-delimited field; written even when empty (repeated bytes entries must be). */
  bytes(field, data) {
    this.tag(field, LENGTH);
    this.varint(data.length);
    this.chunks.push(data);
  }

  /** A proto3 string: the default (empty) is omitted. */
  string(field, text) {
    if (text) this.bytes(field, utf8.encode(text));
  }

  /** A nested message built by `build(writer)`. */
  message(field, build) {
    const inner = new Writer();
    build(inner);
    this.bytes(field, inner.finish());
  }

  /** A packed repeated int64 (shapes). */
  packedInt64(field, values) {
    if (!values.length) return;
    const inner = new Writer();
    for (const v of values) inner.varint(v);
    this.bytes(field, inner.finish());
  }

  double(field, value) {
    this.tag(field, FIXED64);
    const bytes = new Uint8Array(8);
    new DataView(bytes.buffer).setFloat64(0, value, true);
    this.chunks.push(bytes);
  }

  finish() {
    const total = this.chunks.reduce((n, c) => n + c.length, 0);
    const out = new Uint8Array(total);
    let offset = 0;
    for (const chunk of this.chunks) {
      out.set(chunk, offset);
      offset += chunk.length;
    }
    return out;
  }
}

/** Reads fields from a Uint8Array. */
class Reader {
  constructor(bytes) {
    this.bytes = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.pos = 0;
  }

  get done() {
    return this.pos >= this.bytes.length;
  }

  /** The next varint's bytes (at most 10). */
  varintBytes() {
    const start = this.pos;
    for (;;) {
      if (this.pos >= this.bytes.length) throw new Error("protobuf: truncated varint");
      if (this.pos - start >= 10) throw new Error("protobuf: varint too long");
      if (!(this.bytes[this.pos++] & 0x80)) return this.bytes.subarray(start, this.pos);
    }
  }

  /** A varint as a BigInt (exact for every 64-bit value). */
  bigVarint() {
    let result = 0n;
    for (const [i, byte] of this.varintBytes().entries()) result |= BigInt(byte & 0x7f) << BigInt(7 * i);
    return BigInt.asUintN(64, result);
  }

  /** A varint as a Number (exact below 2^53); fast for the small values tags and lengths are. */
  varint() {
    let result = 0;
    let factor = 1;
    for (const byte of this.varintBytes()) {
      result += (byte & 0x7f) * factor;
      factor *= 0x80;
    }
    return result;
  }

  tag() {
    const key = this.varint();
    return [Math.floor(key / 8), key % 8];
  }

  lengthDelimited() {
    const length = this.varint();
    const end = this.pos + length;
    if (end > this.bytes.length) throw new Error("protobuf: field runs past the message");
    const slice = this.bytes.subarray(this.pos, end);
    this.pos = end;
    return slice;
  }

  string() {
    return utf8Decoder.decode(this.lengthDelimited());
  }

  float() {
    const v = this.view.getFloat32(this.pos, true);
    this.pos += 4;
    return v;
  }

  double() {
    const v = this.view.getFloat64(this.pos, true);
    this.pos += 8;
    return v;
  }

  skip(wire) {
    if (wire === VARINT) this.varint();
    else if (wire === FIXED64) this.pos += 8;
    else if (wire === LENGTH) this.lengthDelimited();
    else if (wire === FIXED32) this.pos += 4;
    else throw new Error(`protobuf: unsupported wire type ${wire}`);
  }

  /**
   * A repeated scalar, packed (one length-delimited run) or not (one value per tag):
   * decoders must accept both. `readOne(reader)` reads one value.
   */
  repeated(wire, readOne, into) {
    if (wire === LENGTH) {
      const inner = new Reader(this.lengthDelimited());
      while (!inner.done) into.push(readOne(inner));
    } else {
      into.push(readOne(this));
    }
  }
}

/** A 64-bit integer as a Number when exact, else a BigInt. */
function exact(big) {
  return big >= BigInt(Number.MIN_SAFE_INTEGER) && big <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(big) : big;
}

const I64_MAX = (1n << 63n) - 1n;

const readInt32 = (r) => Number(BigInt.asIntN(32, r.bigVarint()));
const readInt64 = (r) => exact(BigInt.asIntN(64, r.bigVarint()));
const readUint64 = (r) => exact(r.bigVarint());
const readBool = (r) => r.varint() !== 0;

// --- InferParameter: oneof bool(1) int64(2) string(3) double(4) uint64(5) ---

function writeParameter(w, value) {
  if (typeof value === "boolean") {
    w.tag(1, VARINT);
    w.varint(value ? 1 : 0);
  } else if (typeof value === "string") {
    w.bytes(3, utf8.encode(value));
  } else if (typeof value === "bigint") {
    w.tag(value > I64_MAX ? 5 : 2, VARINT);
    w.varint(value);
  } else if (Number.isInteger(value)) {
    w.tag(2, VARINT);
    w.varint(value);
  } else if (typeof value === "number") {
    w.double(4, value);
  } else {
    throw new Error(`unsupported parameter value ${value}`);
  }
}

function readParameter(bytes) {
  const r = new Reader(bytes);
  let value = null;
  while (!r.done) {
    const [field, wire] = r.tag();
    if (field === 1) value = readBool(r);
    else if (field === 2) value = readInt64(r);
    else if (field === 3) value = r.string();
    else if (field === 4) value = r.double();
    else if (field === 5) value = readUint64(r);
    else r.skip(wire);
  }
  return value;
}

/** A map<string, InferParameter> field from a plain object. */
function writeParameters(w, field, parameters = {}) {
  for (const [key, value] of Object.entries(parameters)) {
    w.message(field, (entry) => {
      entry.string(1, key);
      entry.message(2, (p) => writeParameter(p, value));
    });
  }
}

function readParameterEntry(bytes, into) {
  const r = new Reader(bytes);
  let key = "";
  let value = null;
  while (!r.done) {
    const [field, wire] = r.tag();
    if (field === 1) key = r.string();
    else if (field === 2) value = readParameter(r.lengthDelimited());
    else r.skip(wire);
  }
  into[key] = value;
}

// --- ModelInferRequest ---

/**
 * Encodes a ModelInferRequest. `request`: {model_name, model_version?, id?, parameters?,
 * inputs: [{name, datatype, shape, parameters?}], outputs?: [{name, parameters?}],
 * raw_input_contents: [Uint8Array]} (one raw entry per input, in input order).
 */
export function encodeInferRequest(request) {
  const w = new Writer();
  w.string(1, request.model_name);
  w.string(2, request.model_version);
  w.string(3, request.id);
  writeParameters(w, 4, request.parameters);
  for (const input of request.inputs) {
    w.message(5, (t) => {
      t.string(1, input.name);
      t.string(2, input.datatype);
      t.packedInt64(3, input.shape);
      writeParameters(t, 4, input.parameters);
    });
  }
  for (const output of request.outputs ?? []) {
    w.message(6, (t) => {
      t.string(1, output.name);
      writeParameters(t, 2, output.parameters);
    });
  }
  for (const raw of request.raw_input_contents ?? []) w.bytes(7, raw);
  return w.finish();
}

// --- ModelInferResponse / ModelStreamInferResponse ---

function readContents(bytes) {
  const c = {
    bool_contents: [], int_contents: [], int64_contents: [], uint_contents: [],
    uint64_contents: [], fp32_contents: [], fp64_contents: [], bytes_contents: [],
  };
  const r = new Reader(bytes);
  while (!r.done) {
    const [field, wire] = r.tag();
    switch (field) {
      case 1: r.repeated(wire, readBool, c.bool_contents); break;
      case 2: r.repeated(wire, readInt32, c.int_contents); break;
      case 3: r.repeated(wire, readInt64, c.int64_contents); break;
      case 4: r.repeated(wire, (x) => x.varint(), c.uint_contents); break;
      case 5: r.repeated(wire, readUint64, c.uint64_contents); break;
      case 6: r.repeated(wire, (x) => x.float(), c.fp32_contents); break;
      case 7: r.repeated(wire, (x) => x.double(), c.fp64_contents); break;
      case 8: c.bytes_contents.push(r.lengthDelimited()); break;
      default: r.skip(wire);
    }
  }
  return c;
}

function readOutputTensor(bytes) {
  const t = { name: "", datatype: "", shape: [], parameters: {}, contents: null };
  const r = new Reader(bytes);
  while (!r.done) {
    const [field, wire] = r.tag();
    if (field === 1) t.name = r.string();
    else if (field === 2) t.datatype = r.string();
    else if (field === 3) r.repeated(wire, readInt64, t.shape);
    else if (field === 4) readParameterEntry(r.lengthDelimited(), t.parameters);
    else if (field === 5) t.contents = readContents(r.lengthDelimited());
    else r.skip(wire);
  }
  return t;
}

/** Decodes a ModelInferResponse into a plain object with the proto's field names. */
export function decodeInferResponse(bytes) {
  const m = { model_name: "", model_version: "", id: "", parameters: {}, outputs: [], raw_output_contents: [] };
  const r = new Reader(bytes);
  while (!r.done) {
    const [field, wire] = r.tag();
    if (field === 1) m.model_name = r.string();
    else if (field === 2) m.model_version = r.string();
    else if (field === 3) m.id = r.string();
    else if (field === 4) readParameterEntry(r.lengthDelimited(), m.parameters);
    else if (field === 5) m.outputs.push(readOutputTensor(r.lengthDelimited()));
    else if (field === 6) m.raw_output_contents.push(r.lengthDelimited());
    else r.skip(wire);
  }
  return m;
}

/** Decodes a ModelStreamInferResponse: {error_message, infer_response (or null)}. */
export function decodeStreamResponse(bytes) {
  const m = { error_message: "", infer_response: null };
  const r = new Reader(bytes);
  while (!r.done) {
    const [field, wire] = r.tag();
    if (field === 1) m.error_message = r.string();
    else if (field === 2) m.infer_response = decodeInferResponse(r.lengthDelimited());
    else r.skip(wire);
  }
  return m;
}
