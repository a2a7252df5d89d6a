// Try it, chat panel: streams a generation model's reply as it is produced, over SSE
// (OpenAI /v1/chat/completions with stream: true) or over gRPC-Web ModelStreamInfer,
// either with the conversation as chat messages (request parameter chat: true) or with
// the last message as a plain prompt.

import { postStream } from "./api.js";
import { byId, formatMs, h, setOptions, showError } from "./dom.js";
import { inferStream } from "./infer.js";
import { isGenerator } from "./models.js";
import { parseValues, resolveShape } from "./tensors.js";

const form = byId("chat-form");
const modelSelect = byId("chat-model");
const transportSelect = byId("chat-transport");
const maxTokensInput = byId("chat-max-tokens");
const log = byId("chat-log");
const input = byId("chat-input");
const sendButton = byId("chat-send");
const stopButton = byId("chat-stop");
const statsLine = byId("chat-stats");
const errorBox = byId("chat-error");

let generators = [];
/** The conversation so far: [{role, content}]. */
let history = [];
let controller = null;

function bubble(role, text) {
  return h("li", { class: `message ${role}` }, h("span", { class: "role" }, role), h("span", { class: "text" }, text));
}

/** Reads OpenAI SSE chunks, handing each delta's text to `onPiece`. */
async function streamSse(model, messages, maxTokens, onPiece, signal) {
  const response = await postStream("/v1/chat/completions", { model, messages, stream: true, max_tokens: maxTokens }, signal);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer = (buffer + value).replace(/\r\n/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = event.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).replace(/^ /, "")).join("\n");
      if (!data) continue;
      if (data === "[DONE]") return;
      const chunk = JSON.parse(data);
      // An error after the stream started comes as one event, without [DONE].
      if (chunk.error) throw new Error(`The server stopped the stream: ${chunk.error.message ?? chunk.error}`);
      onPiece(chunk.choices?.[0]?.delta?.content ?? "");
    }
  }
  throw new Error("The stream ended without [DONE].");
}

/** ModelStreamInfer: one request, the text_output of each response to `onPiece`. */
async function streamGrpc(info, chat, text, messages, maxTokens, onPiece, signal) {
  const tensors = [];
  const add = (name, value) => {
    const spec = info.inputs.find((i) => i.name === name);
    if (!spec) return;
    const values = parseValues(String(value), spec.datatype, spec.whole);
    tensors.push({ name, datatype: spec.datatype, shape: resolveShape(name, spec.dims, values.length, info.batching), values });
  };
  add("text_input", chat ? JSON.stringify(messages) : text);
  add("max_tokens", maxTokens);
  await inferStream(info.name, tensors, chat ? { chat: true } : {}, ({ outputs }) => {
    const piece = outputs.find((o) => o.name === "text_output");
    if (piece) onPiece(piece.values.join(""));
  }, signal);
}

async function send(event) {
  event.preventDefault();
  const text = input.value.trim();
  const info = generators.find((g) => g.name === modelSelect.value);
  if (!text || !info) return;
  showError(errorBox, null);
  const maxTokens = Number(maxTokensInput.value) || 64;
  const transport = transportSelect.value;
  const messages = [...history, { role: "user", content: text }];

  log.querySelector("[data-testid=chat-reply]")?.removeAttribute("data-testid");
  const reply = bubble("assistant", "");
  const replyText = reply.querySelector(".text");
  replyText.setAttribute("data-testid", "chat-reply");
  log.append(bubble("user", text), reply);
  input.value = "";

  controller = new AbortController();
  sendButton.disabled = true;
  stopButton.disabled = false;
  statsLine.textContent = "Streaming…";
  const start = performance.now();
  let pieces = 0;
  let first = null;
  const onPiece = (piece) => {
    if (!piece) return;
    pieces++;
    first ??= performance.now() - start;
    replyText.textContent += piece;
    reply.scrollIntoView({ block: "nearest" });
  };
  try {
    if (transport === "sse") await streamSse(info.name, messages, maxTokens, onPiece, controller.signal);
    else await streamGrpc(info, transport === "grpc-chat", text, messages, maxTokens, onPiece, controller.signal);
    const seconds = (performance.now() - start) / 1000;
    statsLine.textContent = `${pieces} pieces streamed · first after ${formatMs(first)} · ${seconds.toFixed(2)} s in all · ${(pieces / seconds).toFixed(1)} pieces/s`;
  } catch (error) {
    if (error.name === "AbortError") statsLine.textContent = `Stopped after ${pieces} pieces.`;
    else {
      statsLine.textContent = "";
      showError(errorBox, error);
    }
  } finally {
    history = [...messages, { role: "assistant", content: replyText.textContent }];
    controller = null;
    sendButton.disabled = false;
    stopButton.disabled = true;
  }
}

export function init() {
  form.addEventListener("submit", send);
  stopButton.addEventListener("click", () => controller?.abort());
  byId("chat-clear").addEventListener("click", () => {
    history = [];
    log.replaceChildren();
    statsLine.textContent = "";
  });
  // Enter sends, Shift+Enter starts a new line, as chat boxes do.
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
}

export function update(infos) {
  generators = infos.filter(isGenerator);
  setOptions(modelSelect, generators.map((g) => ({ value: g.name })));
  const none = !generators.length;
  for (const el of form.elements) {
    if (el === stopButton) el.disabled = !controller;
    else el.disabled = none || (el === sendButton && controller !== null);
  }
  byId("chat-hint").textContent = none
    ? "No generation model is ready on this server (the full demo serves smollm2)."
    : "Streams a generation model's reply token by token.";
}
