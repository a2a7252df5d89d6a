// Tiny DOM helpers. Everything is built with createElement and textContent (never
// innerHTML), so server-provided strings can't inject markup, and nothing here touches
// the `style` attribute, which the console's Content-Security-Policy forbids.

/**
 * Creates an element. `props` keys: `class`, `text`, `dataset` (object), `on` (event
 * name -> handler), anything else becomes an attribute (`false`/`null` omit it, `true`
 * sets it empty). Children may be nodes, strings, numbers, arrays or null.
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "on") for (const [name, fn] of Object.entries(value)) el.addEventListener(name, fn);
    else if (key === "style") throw new Error("inline styles are blocked by the CSP; use classes");
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

/** Replaces all children of `el`. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

/** document.getElementById that fails loudly: a missing element is a bug in index.html. */
export function byId(id) {
  const el = document.getElementById(id);
  if (!el) throw new Error(`index.html lacks #${id}`);
  return el;
}

/** Shows `error` (an Error or string) in an alert box, or hides the box for null. */
export function showError(box, error) {
  if (!error) {
    box.hidden = true;
    box.textContent = "";
    return;
  }
  box.hidden = false;
  box.textContent = error instanceof Error ? error.message : String(error);
}

/**
 * Runs `work` (async) with `button` disabled and `errorBox` cleared; an error it throws is
 * shown in the box.
 */
export async function busy(button, errorBox, work) {
  showError(errorBox, null);
  button.disabled = true;
  try {
    await work();
  } catch (error) {
    showError(errorBox, error);
  } finally {
    button.disabled = false;
  }
}

/** Fills a <select> with options [{value, label, disabled}], keeping the current value when still offered. */
export function setOptions(select, options) {
  const previous = select.value;
  select.replaceChildren(...options.map((o) => h("option", { value: o.value, disabled: o.disabled }, o.label ?? o.value)));
  if (options.some((o) => o.value === previous && !o.disabled)) select.value = previous;
}

/** Bytes as a short human figure: 1234 -> "1.2 KB" (decimal units, as network tools do). */
export function formatBytes(n) {
  if (n < 1000) return `${n} B`;
  if (n < 1e6) return `${(n / 1e3).toFixed(1)} KB`;
  return `${(n / 1e6).toFixed(2)} MB`;
}

/** Milliseconds with a precision that suits their size. */
export function formatMs(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return "—";
  return ms < 10 ? `${ms.toFixed(2)} ms` : ms < 1000 ? `${ms.toFixed(1)} ms` : `${(ms / 1000).toFixed(2)} s`;
}
