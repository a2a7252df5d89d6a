// KServe v2 tensors in the browser: parsing form text into typed values, shapes, and the
// raw little-endian byte layout shared by REST binary data and gRPC raw contents
// (docs/PROTOCOL.md, "Datatypes and byte layout"). BYTES elements are a 4-byte
// little-endian length followed by the bytes.

const SIZES = {
  BOOL: 1, UINT8: 1, INT8: 1, UINT16: 2, INT16: 2, FP16: 2, BF16: 2,
  UINT32: 4, INT32: 4, FP32: 4, UINT64: 8, INT64: 8, FP64: 8,
};

const INTEGER_RANGES = {
  UINT8: [0, 255], INT8: [-128, 127], UINT16: [0, 65535], INT16: [-32768, 32767],
  UINT32: [0, 4294967295], INT32: [-2147483648, 2147483647],
  UINT64: [0n, (1n << 64n) - 1n], INT64: [-(1n << 63n), (1n << 63n) - 1n],
};

const utf8 = new TextEncoder();
const utf8Decoder = new TextDecoder();

export function isNumeric(datatype) {
  return datatype in SIZES && datatype !== "BOOL";
}

// --- FP16 and BF16 have no JS type: convert through float32 bits ---

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

function floatToHalf(value) {
  f32[0] = value;
  const x = u32[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = ((x >>> 23) & 0xff) - 127 + 15;
  let mant = x & 0x7fffff;
  if (((x >>> 23) & 0xff) === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  if (exp >= 0x1f) return sign | 0x7c00;
  if (exp <= 0) {
    if (exp < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - exp;
    let half = mant >>> shift;
    const rest = mant & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (rest > halfway || (rest === halfway && half & 1)) half++;
    return sign | half;
  }
  let half = sign | (exp << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && half & 1)) half++; // may carry into the exponent: correct
  return half;
}

function halfToFloat(h) {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 31) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

function floatToBf16(value) {
  f32[0] = value;
  const x = u32[0];
  if (Number.isNaN(value)) return ((x >>> 16) & 0x8000) | 0x7fc0;
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

function bf16ToFloat(b) {
  u32[0] = b << 16;
  return f32[0];
}

/**
 * The value a float takes once stored as `datatype`, so numbers that came back as JSON
 * text compare equal to the same numbers decoded from raw bytes.
 */
export function roundToType(datatype, value) {
  if (datatype === "FP32") return Math.fround(value);
  if (datatype === "FP16") return halfToFloat(floatToHalf(value));
  if (datatype === "BF16") return bf16ToFloat(floatToBf16(value));
  return value;
}

// --- Form text -> values ---

function parseOne(token, datatype) {
  if (datatype === "BOOL") {
    if (/^(true|1)$/i.test(token)) return true;
    if (/^(false|0)$/i.test(token)) return false;
    throw new Error(`'${token}' is not a BOOL (true/false/1/0)`);
  }
  if (datatype in INTEGER_RANGES) {
    if (!/^[+-]?\d+$/.test(token)) throw new Error(`'${token}' is not an integer (${datatype})`);
    const big = BigInt(token);
    const [lo, hi] = INTEGER_RANGES[datatype];
    if (big < BigInt(lo) || big > BigInt(hi)) throw new Error(`${token} is out of range for ${datatype}`);
    return Number.isSafeInteger(Number(big)) ? Number(big) : big;
  }
  const number = Number(token);
  if (token === "" || Number.isNaN(number)) throw new Error(`'${token}' is not a number (${datatype})`);
  return number;
}

/**
 * Parses a form field: numbers separated by commas and/or spaces; BYTES text split at
 * commas, or kept whole when `whole` (an input that holds one text element).
 */
export function parseValues(text, datatype, whole) {
  if (datatype === "BYTES") return whole ? [text] : text.split(",").map((s) => s.trim());
  const tokens = text.split(/[\s,]+/).filter(Boolean);
  return tokens.map((token) => parseOne(token, datatype));
}

/**
 * The request shape of an input: the model's dims with one -1 inferred from the value
 * count (further -1s become 1), and a batch dimension of 1 in front when the model
 * batches. Throws when the count does not fit.
 */
export function resolveShape(name, dims, count, batching) {
  const shape = dims.slice();
  const known = shape.filter((d) => d >= 0).reduce((a, b) => a * b, 1);
  const free = shape.indexOf(-1);
  if (free >= 0) {
    shape.forEach((d, i) => { if (d < 0) shape[i] = 1; });
    if (known === 0 || count % known !== 0) throw new Error(`${name}: ${count} values do not fill shape [${dims}]`);
    shape[free] = count / known;
  } else if (count !== known) {
    throw new Error(`${name}: shape [${dims}] takes ${known} values, got ${count}`);
  }
  return batching ? [1, ...shape] : shape;
}

// --- Raw bytes ---

/** The raw little-endian bytes of `values` as `datatype`. */
export function encodeRaw(datatype, values) {
  if (datatype === "BYTES") {
    const items = values.map((v) => (v instanceof Uint8Array ? v : utf8.encode(String(v))));
    const out = new Uint8Array(items.reduce((n, b) => n + 4 + b.length, 0));
    const view = new DataView(out.buffer);
    let offset = 0;
    for (const item of items) {
      view.setUint32(offset, item.length, true);
      out.set(item, offset + 4);
      offset += 4 + item.length;
    }
    return out;
  }
  const size = SIZES[datatype];
  if (!size) throw new Error(`unsupported datatype ${datatype}`);
  const out = new Uint8Array(values.length * size);
  const view = new DataView(out.buffer);
  values.forEach((v, i) => {
    const o = i * size;
    switch (datatype) {
      case "BOOL": view.setUint8(o, v ? 1 : 0); break;
      case "UINT8": view.setUint8(o, v); break;
      case "INT8": view.setInt8(o, v); break;
      case "UINT16": view.setUint16(o, v, true); break;
      case "INT16": view.setInt16(o, v, true); break;
      case "UINT32": view.setUint32(o, v, true); break;
      case "INT32": view.setInt32(o, v, true); break;
      case "UINT64": view.setBigUint64(o, BigInt(v), true); break;
      case "INT64": view.setBigInt64(o, BigInt(v), true); break;
      case "FP16": view.setUint16(o, floatToHalf(v), true); break;
      case "BF16": view.setUint16(o, floatToBf16(v), true); break;
      case "FP32": view.setFloat32(o, v, true); break;
      case "FP64": view.setFloat64(o, v, true); break;
    }
  });
  return out;
}

/** A 64-bit integer as a Number when exact, else a BigInt. */
function exact(big) {
  return Number.isSafeInteger(Number(big)) ? Number(big) : big;
}

/** Decodes raw little-endian bytes of `datatype` into values (BYTES as text). */
export function decodeRaw(datatype, bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const values = [];
  if (datatype === "BYTES") {
    for (let o = 0; o < bytes.length;) {
      if (o + 4 > bytes.length) throw new Error("BYTES tensor: truncated length prefix");
      const length = view.getUint32(o, true);
      if (o + 4 + length > bytes.length) throw new Error("BYTES tensor: element runs past the data");
      values.push(utf8Decoder.decode(bytes.subarray(o + 4, o + 4 + length)));
      o += 4 + length;
    }
    return values;
  }
  const size = SIZES[datatype];
  if (!size) throw new Error(`unsupported datatype ${datatype}`);
  if (bytes.length % size) throw new Error(`${datatype} tensor: ${bytes.length} bytes is not a whole number of elements`);
  for (let o = 0; o < bytes.length; o += size) {
    switch (datatype) {
      case "BOOL": values.push(view.getUint8(o) !== 0); break;
      case "UINT8": values.push(view.getUint8(o)); break;
      case "INT8": values.push(view.getInt8(o)); break;
      case "UINT16": values.push(view.getUint16(o, true)); break;
      case "INT16": values.push(view.getInt16(o, true)); break;
      case "UINT32": values.push(view.getUint32(o, true)); break;
      case "INT32": values.push(view.getInt32(o, true)); break;
      case "UINT64": values.push(exact(view.getBigUint64(o, true))); break;
      case "INT64": values.push(exact(view.getBigInt64(o, true))); break;
      case "FP16": values.push(halfToFloat(view.getUint16(o, true))); break;
      case "BF16": values.push(bf16ToFloat(view.getUint16(o, true))); break;
      case "FP32": values.push(view.getFloat32(o, true)); break;
      case "FP64": values.push(view.getFloat64(o, true)); break;
    }
  }
  return values;
}

/** Values of a gRPC typed-contents message for `datatype`. */
export function fromContents(datatype, contents) {
  if (!contents) return [];
  if (datatype === "BYTES") return contents.bytes_contents.map((b) => utf8Decoder.decode(b));
  if (datatype === "BOOL") return contents.bool_contents;
  if (["INT8", "INT16", "INT32"].includes(datatype)) return contents.int_contents;
  if (["UINT8", "UINT16", "UINT32"].includes(datatype)) return contents.uint_contents;
  if (datatype === "INT64") return contents.int64_contents;
  if (datatype === "UINT64") return contents.uint64_contents;
  if (datatype === "FP64") return contents.fp64_contents;
  return contents.fp32_contents;
}

/** Values for display: the first `limit`, then how many there are. */
export function formatValues(values, limit = 64) {
  const shown = values.slice(0, limit).map((v) => (typeof v === "number" && !Number.isInteger(v) ? Number(v.toPrecision(7)) : v));
  const text = shown.map((v) => (typeof v === "string" ? JSON.stringify(v) : String(v))).join(", ");
  return values.length > limit ? `${text}, … (${values.length} values)` : text;
}

/** Exact equality of two value lists (BigInt-aware; NaN equals NaN). */
export function sameValues(a, b) {
  return a.length === b.length && a.every((v, i) => v === b[i] || (Number.isNaN(v) && Number.isNaN(b[i])) || String(v) === String(b[i]));
}

/**
 * JSON.stringify that writes BigInt values (64-bit integers past 2^53) as bare JSON
 * numbers, which JSON.stringify refuses to do itself.
 */
export function stringifyJson(body) {
  const marked = JSON.stringify(body, (_, v) => (typeof v === "bigint" ? `\u0000big:${v}` : v));
  return marked.replace(/"\\u0000big:(-?\d+)"/g, "$1");
}
