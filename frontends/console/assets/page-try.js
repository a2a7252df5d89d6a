// Try it page: panels that each send one kind of request to a ready model. They share
// one look-up of the ready models' metadata and configs each time the page is shown.

import { byId, showError } from "./dom.js";
import { readyModelInfos } from "./models.js";
import * as chat from "./try-chat.js";
import * as embed from "./try-embed.js";
import * as inferPanel from "./try-infer.js";
import * as rerank from "./try-rerank.js";

const PANELS = [inferPanel, chat, embed, rerank];

const errorBox = byId("try-error");

export function init() {
  for (const panel of PANELS) panel.init();
}

export async function show() {
  try {
    const infos = await readyModelInfos();
    showError(errorBox, null);
    await Promise.all(PANELS.map((panel) => panel.update(infos)));
  } catch (error) {
    showError(errorBox, error);
  }
}
