// The console's entry point: reads settings.json, asks for the API key when the server
// wants one, then starts the pages and routes between them by the URL hash (#/models,
// #/live, #/try, #/compare). Every page stays in the document, so the Live page keeps
// sampling while another page is shown.

import { clearKey, getKey, loadSettings, onUnauthorized, request, setKey } from "./api.js";
import { byId, showError } from "./dom.js";
import * as comparePage from "./page-compare.js";
import * as livePage from "./page-live.js";
import * as modelsPage from "./page-models.js";
import * as tryPage from "./page-try.js";

const PAGES = {
  models: { module: modelsPage, title: "Models" },
  live: { module: livePage, title: "Live" },
  try: { module: tryPage, title: "Try it" },
  compare: { module: comparePage, title: "Compare" },
};
const DEFAULT_PAGE = "models";

let current = null;
let started = false;

function pageFromHash() {
  const match = /^#\/([a-z]+)/.exec(location.hash);
  return match && PAGES[match[1]] ? match[1] : null;
}

/** Shows one page; `focusHeading` moves focus there after a navigation (not on first load). */
function showPage(name, focusHeading) {
  current = name;
  for (const key of Object.keys(PAGES)) byId(`page-${key}`).hidden = key !== name;
  for (const link of document.querySelectorAll("nav a")) {
    if (link.getAttribute("href") === `#/${name}`) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = `${PAGES[name].title} · Nereid console`;
  PAGES[name].module.show();
  if (focusHeading) byId(`h-${name}`).focus();
}

function onHashChange() {
  const name = pageFromHash();
  if (name) showPage(name, true);
}

function start() {
  started = true;
  for (const { module } of Object.values(PAGES)) module.init();
  const name = pageFromHash();
  if (!name) history.replaceState(null, "", `#/${DEFAULT_PAGE}`);
  showPage(name ?? DEFAULT_PAGE, false);
  window.addEventListener("hashchange", onHashChange);
}

// --- API key ---

const dialog = byId("key-dialog");
const keyInput = byId("key-input");
const keyError = byId("key-error");

/** Opens the key dialog; `error` says why when the server refused the key in use. */
function askForKey(error) {
  byId("key-reason").textContent = error
    ? `The server refused the API key (${error.message}). Enter it again; the console keeps it in this tab's session storage only.`
    : "This server requires an API key. The console keeps it in this tab's session storage only.";
  showError(keyError, null);
  if (!dialog.open) dialog.showModal();
  keyInput.focus();
}

async function submitKey(event) {
  event.preventDefault();
  const key = keyInput.value.trim();
  if (!key) return;
  const button = dialog.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    // The console's own metrics need the key and belong to no restricted API group, so
    // the answer says whether the server takes the key and nothing else.
    await request("/console/metrics", { key });
    setKey(key);
    keyInput.value = "";
    dialog.close();
    if (started) PAGES[current].module.show();
    else start();
  } catch (error) {
    showError(keyError, error.unauthorized ? "The server refused this key (401 Unauthorized). Check it and try again." : error);
  } finally {
    button.disabled = false;
  }
}

async function boot() {
  byId("key-form").addEventListener("submit", submitKey);
  // The key is required: Escape must not leave a console that cannot load anything.
  dialog.addEventListener("cancel", (event) => event.preventDefault());
  onUnauthorized(askForKey);
  let settings;
  try {
    settings = await loadSettings();
  } catch (error) {
    showError(byId("global-error"), error);
    return;
  }
  byId("server-info").textContent = `Nereid ${settings.version} · ${settings.role} · model control: ${settings.model_control_mode}`;
  if (settings.api_key_required) {
    const forget = byId("forget-key");
    forget.hidden = false;
    forget.addEventListener("click", () => {
      clearKey();
      askForKey();
    });
  }
  if (settings.api_key_required && !getKey()) askForKey();
  else start();
}

boot();
