// Search every transcript (GET /v1/search): hits with their matches marked, the job and the time;
// choosing one opens that job at that second, playing.

import { clock, fill, h, marked } from "./dom.js";

export function setupSearch(api, { openAt }) {
  const box = document.getElementById("search");
  const panel = document.getElementById("results");
  const list = document.getElementById("results-list");
  const status = document.getElementById("results-status");
  const more = document.getElementById("results-more");
  let timer = null;
  let query = "";
  let cursor = null;
  let generation = 0;

  async function run(append) {
    const mine = ++generation;
    const params = new URLSearchParams({ q: query, limit: "20" });
    if (append && cursor) params.set("cursor", cursor);
    try {
      const body = await api.json(`/v1/search?${params}`);
      if (mine !== generation) return;
      if (!append) list.replaceChildren();
      for (const hit of body.data) list.append(item(hit));
      cursor = body.next_cursor;
      more.hidden = !cursor;
      status.textContent = list.children.length
        ? `${list.children.length}${cursor ? "+" : ""} matching segment${list.children.length === 1 ? "" : "s"}`
        : `Nothing matches “${query}”.`;
    } catch (err) {
      if (mine === generation) status.textContent = err.message;
    }
  }

  function item(hit) {
    const name = hit.filename || `job ${hit.job_id.slice(0, 8)}`;
    return h(
      "li",
      {},
      h(
        "button",
        { type: "button", class: "hit", onclick: () => openAt(hit.job_id, hit.start) },
        h("span", { class: "hit-where muted" }, `${name} · ${clock(hit.start)}`),
        h("span", { class: "hit-text" }, marked(hit.text, hit.matches)),
      ),
    );
  }

  box.addEventListener("input", () => {
    clearTimeout(timer);
    query = box.value.trim();
    if (!query) {
      panel.hidden = true;
      fill(list);
      generation++;
      return;
    }
    panel.hidden = false;
    timer = setTimeout(() => run(false), 200);
  });
  box.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      box.value = "";
      box.dispatchEvent(new Event("input"));
    }
  });
  more.addEventListener("click", () => run(true));
}
