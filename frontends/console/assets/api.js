// The console's one way to reach the server: settings, the API key, and fetch wrappers
// that add the key and turn error answers into exceptions carrying the server's message.
// Every URL is relative to the page or built from `location`, so the console works behind
// TLS and under any host name.

const KEY_STORAGE = "nereid.console.apiKey";

/** An error answer from the server (HTTP or gRPC), with the server's own message. */
export class ApiError extends Error {
  constructor(message, { status = 0, grpcStatus = null } = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.grpcStatus = grpcStatus;
  }

  /** True when the server refused the API key (HTTP 401, gRPC UNAUTHENTICATED). */
  get unauthorized() {
    return this.status === 401 || this.grpcStatus === 16;
  }
}

let settings = null;
let unauthorizedHandler = () => {};

/**
 * fetch() that names the URL when the server cannot be reached at all (fetch itself only
 * says "Failed to fetch"). A cancelled request still rejects with its AbortError.
 */
export async function reach(url, init) {
  try {
    return await fetch(url, init);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(`${init?.method ?? "GET"} ${url}: the server could not be reached (${error.message}). `
      + "It may be down, or the browser refused the connection (CORS, or a certificate it does not trust).");
  }
}

/** Reads /console/settings.json once (it needs no key). */
export async function loadSettings() {
  const response = await reach("settings.json", { cache: "no-store" });
  if (!response.ok) throw new ApiError(`settings.json: ${await errorMessage(response)}`, { status: response.status });
  settings = await response.json();
  return settings;
}

export function getSettings() {
  return settings;
}

/** The gRPC-Web base URL (another origin: the gRPC port, which serves CORS), or null. */
export function grpcBase() {
  const web = settings?.grpc_web;
  if (!web?.port) return null;
  return `${web.tls ? "https" : "http"}://${location.hostname}:${web.port}`;
}

export function getKey() {
  return sessionStorage.getItem(KEY_STORAGE);
}

export function setKey(key) {
  sessionStorage.setItem(KEY_STORAGE, key);
}

export function clearKey() {
  sessionStorage.removeItem(KEY_STORAGE);
}

/** True while the server wants a key and none is stored: background polls wait. */
export function keyPending() {
  return Boolean(settings?.api_key_required) && !getKey();
}

/** Headers every authenticated call carries (none when no key is stored). */
export function authHeaders(key = getKey()) {
  return key ? { Authorization: `Bearer ${key}` } : {};
}

/** Registers what happens when the server refuses the key (the app asks for it again). */
export function onUnauthorized(handler) {
  unauthorizedHandler = handler;
}

/** Tells the app the key was refused; every door funnels its 401 / UNAUTHENTICATED here. */
export function reportUnauthorized(error) {
  clearKey();
  unauthorizedHandler(error);
}

/**
 * fetch() against the HTTP port with the API key. Resolves to the Response when it is
 * 2xx; otherwise throws an ApiError with the server's message (and on 401 asks for the
 * key again). `options.key` overrides the stored key (used to check a typed key).
 */
export async function request(path, options = {}) {
  const { key, headers, ...rest } = options;
  const response = await reach(path, { ...rest, headers: { ...authHeaders(key ?? getKey()), ...headers } });
  if (response.ok) return response;
  const error = new ApiError(`${rest.method ?? "GET"} ${path}: ${await errorMessage(response)}`, { status: response.status });
  if (error.unauthorized && key === undefined) reportUnauthorized(error);
  throw error;
}

export async function getJson(path) {
  return (await request(path)).json();
}

export async function postJson(path, body) {
  const response = await request(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  return response.json();
}

/** POSTs JSON and returns the Response unread, for streamed answers (SSE). */
export function postStream(path, body, signal) {
  return request(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
    body: JSON.stringify(body),
    signal,
  });
}

/**
 * The message of an error answer: KServe's {"error": "..."}, OpenAI's
 * {"error": {"message": ...}}, or the body text / status line when it is neither.
 */
async function errorMessage(response) {
  const text = await response.text();
  let message = text.trim();
  try {
    const body = JSON.parse(text);
    if (typeof body?.error === "string") message = body.error;
    else if (typeof body?.error?.message === "string") message = body.error.message;
  } catch {
    // Not JSON: the text itself is the message.
  }
  return `${response.status} ${response.statusText || ""}`.trim() + (message ? ` — ${message}` : "");
}
