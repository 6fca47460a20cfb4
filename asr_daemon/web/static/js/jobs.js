// The archive: every job the caller may see, newest first, paged; deleted (with transcript and
// audio) after a confirmation. Queued and running rows are kept current by polling every 5 s (the
// open job's row also by the transcript view's event stream, the page's only one: a browser holds
// 6 connections per host, and a stream per unfinished job would starve every other request).

import { ApiError } from "./api.js";
import { clock, fill, h, when } from "./dom.js";

const PAGE = 20;
const FINAL = ["completed", "failed", "cancelled"];

export function setupJobs(api, { onOpen, onFinished, notice }) {
  const list = document.getElementById("job-list");
  const empty = document.getElementById("jobs-empty");
  const more = document.getElementById("jobs-more");
  const confirmDialog = document.getElementById("confirm-dialog");
  const rows = new Map(); // job id -> {job, li}
  let cursor = null;
  let selected = null;
  let loaded = false; // the first page came: refreshing will not prompt for a key the user declined

  function nameOf(job) {
    return job.filename || `${job.kind === "live" ? "live session" : "job"} ${job.id.slice(0, 8)}`;
  }

  function render(entry) {
    const job = entry.job;
    const frac = job.progress?.fraction;
    const meta = [
      clock(job.audio?.duration_s),
      job.model,
      job.language || null,
      job.task === "translate" ? "→ English" : null,
      when(job.created_at),
    ].filter(Boolean).join(" · ");
    fill(
      entry.li,
      h("button", { type: "button", class: "job-open", onclick: () => select(job.id, {}) }, nameOf(job)),
      h("span", { class: `status status-${job.status}` }, job.status),
      h("span", { class: "job-meta muted" }, meta),
      (job.status === "running" || job.status === "queued") && job.kind !== "live"
        ? h("progress", { max: "1", value: String(frac || 0), "aria-label": `progress of ${nameOf(job)}` })
        : null,
      job.error ? h("p", { class: "error job-error" }, job.error.message) : null,
      h("button", {
        type: "button",
        class: "quiet delete",
        "aria-label": `Delete ${nameOf(job)}`,
        onclick: () => remove(job),
      }, "Delete"),
    );
    entry.li.classList.toggle("selected", selected === job.id);
    entry.li.setAttribute("aria-current", selected === job.id ? "true" : "false");
  }

  /** Show `job` (added, or its row redrawn); a known job that has just finished is passed to onFinished. */
  function put(job, { atTop = false } = {}) {
    let entry = rows.get(job.id);
    const finishing = entry && !FINAL.includes(entry.job.status) && FINAL.includes(job.status);
    if (!entry) {
      entry = { job, li: h("li", { class: "job", dataset: { id: job.id } }) };
      rows.set(job.id, entry);
      if (atTop) list.prepend(entry.li);
      else list.append(entry.li);
    }
    entry.job = job;
    render(entry);
    empty.hidden = rows.size > 0;
    if (finishing) onFinished(job);
    return entry;
  }

  /** An event of the open job's stream (the transcript view's): its row shows it at once. */
  async function event(id, type, data) {
    if (FINAL.includes(type)) {
      try {
        const job = await api.json(`/v1/jobs/${id}`, { prompt: false }); // the finished job, as stored
        if (rows.has(id)) put(job);
        else onFinished(job); // opened by a link, not listed
      } catch {
        /* the next poll shows it */
      }
      return;
    }
    const entry = rows.get(id);
    if (!entry) return;
    const job = entry.job;
    if (type === "started") job.status = "running";
    if (type === "segment") {
      job.status = "running";
      job.progress = { ...job.progress, fraction: data.progress ?? job.progress?.fraction };
    }
    render(entry);
  }

  async function load() {
    list.replaceChildren();
    rows.clear();
    cursor = null;
    await page();
  }

  async function page() {
    const params = new URLSearchParams({ limit: String(PAGE) });
    if (cursor) params.set("cursor", cursor);
    try {
      const body = await api.json(`/v1/jobs?${params}`);
      for (const job of body.data) put(job);
      cursor = body.next_cursor;
      loaded = true;
      more.hidden = !cursor;
      empty.hidden = rows.size > 0;
    } catch (err) {
      notice(`The job list cannot be loaded: ${err.message}`, true);
    }
  }
  more.addEventListener("click", page);

  function changed(entry, job) {
    return entry.job.status !== job.status || (entry.job.progress?.fraction ?? null) !== (job.progress?.fraction ?? null);
  }

  /**
   * Every 5 s: jobs submitted elsewhere (curl, asrctl, another tab) appear at the top without a
   * reload, and unfinished rows show their progress and end — those of the first page from it, the
   * others from the running and queued lists (and one GET each once they have left those). Without
   * a key dialog: a 401 stops the polling and says so.
   */
  async function refreshTop() {
    if (document.hidden || !loaded || polling === null) return;
    const quiet = { prompt: false };
    try {
      const body = await api.json(`/v1/jobs?limit=${PAGE}`, quiet);
      const seen = new Set();
      for (const job of [...body.data].reverse()) {
        seen.add(job.id);
        const known = rows.get(job.id);
        if (!known) put(job, { atTop: true });
        else if (changed(known, job)) put(job);
      }
      const open = [...rows.values()].filter((e) => !FINAL.includes(e.job.status) && !seen.has(e.job.id));
      if (!open.length) return;
      for (const status of ["running", "queued"]) {
        const more = await api.json(`/v1/jobs?status=${status}&limit=200`, quiet);
        for (const job of more.data) {
          seen.add(job.id);
          const known = rows.get(job.id);
          if (known && changed(known, job)) put(job);
        }
      }
      for (const entry of open.filter((e) => !seen.has(e.job.id)).slice(0, 10)) {
        const job = await api.json(`/v1/jobs/${entry.job.id}`, quiet); // finished since
        if (rows.has(job.id) && changed(rows.get(job.id), job)) put(job);
      }
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) {
        clearInterval(polling);
        polling = null;
        notice("The server refused the API key: the job list is no longer updated. Choose “Change API key” to enter another.", true);
      }
      /* otherwise the next round may work */
    }
  }
  let polling = setInterval(refreshTop, 5000);
  const keyChanged = api.onKeyChange;
  api.onKeyChange = (key) => {
    keyChanged(key);
    if (polling === null && key) {
      polling = setInterval(refreshTop, 5000);
      refreshTop();
    }
  };

  function confirmDelete(job) {
    fill(document.getElementById("confirm-text"),
      "Delete ", h("strong", {}, nameOf(job)), " with its transcript and audio? This cannot be undone.");
    confirmDialog.returnValue = "";
    confirmDialog.showModal();
    return new Promise((resolve) => {
      confirmDialog.addEventListener("close", () => resolve(confirmDialog.returnValue === "yes"), { once: true });
    });
  }

  async function remove(job) {
    if (!(await confirmDelete(job))) return;
    try {
      if (!FINAL.includes(job.status)) {
        await api.fetch(`/v1/jobs/${job.id}`, { method: "DELETE" });
        for (let i = 0; i < 40; i++) {
          const now = await api.json(`/v1/jobs/${job.id}`);
          if (FINAL.includes(now.status)) break;
          await new Promise((r) => setTimeout(r, 250));
        }
      }
      await api.fetch(`/v1/jobs/${job.id}/delete`, { method: "POST" });
      rows.get(job.id)?.li.remove();
      rows.delete(job.id);
      empty.hidden = rows.size > 0;
      notice(`${nameOf(job)} deleted.`);
      if (selected === job.id) onOpen(null, {});
    } catch (err) {
      notice(`${nameOf(job)}: ${err.message}`, true);
    }
  }

  async function select(id, how) {
    selected = id;
    for (const entry of rows.values()) render(entry);
    let job = rows.get(id)?.job;
    if (!job) {
      try {
        job = await api.json(`/v1/jobs/${id}`);
      } catch (err) {
        notice(err.message, true);
        return;
      }
    }
    onOpen(job, how);
  }

  return { load, add: (job) => put(job, { atTop: true }), select, event };
}
