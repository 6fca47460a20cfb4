// The archive: every job the caller may see, newest first, paged; live while queued or running;
// deleted (with transcript and audio) after a confirmation.

import { clock, fill, h, when } from "./dom.js";

const PAGE = 20;
const FINAL = ["completed", "failed", "cancelled"];

export function setupJobs(api, { onOpen, onSegment, onFinished, notice }) {
  const list = document.getElementById("job-list");
  const empty = document.getElementById("jobs-empty");
  const more = document.getElementById("jobs-more");
  const confirmDialog = document.getElementById("confirm-dialog");
  const rows = new Map(); // job id -> {job, li, follow: AbortController|null}
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

  function put(job, { atTop = false } = {}) {
    let entry = rows.get(job.id);
    if (!entry) {
      entry = { job, li: h("li", { class: "job", dataset: { id: job.id } }), follow: null };
      rows.set(job.id, entry);
      if (atTop) list.prepend(entry.li);
      else list.append(entry.li);
    }
    entry.job = job;
    render(entry);
    if (!FINAL.includes(job.status) && !entry.follow) follow(entry);
    empty.hidden = rows.size > 0;
    return entry;
  }

  function follow(entry) {
    const ctl = new AbortController();
    entry.follow = ctl;
    const id = entry.job.id;
    api
      .follow(id, (type, data) => {
        const job = entry.job;
        if (type === "started") job.status = "running";
        if (type === "segment") {
          job.status = "running";
          job.progress = { ...job.progress, fraction: data.progress ?? job.progress?.fraction };
          onSegment(id, data);
        }
        if (FINAL.includes(type)) {
          job.status = type;
          if (data.error) job.error = data.error;
        }
        render(entry);
      }, ctl.signal)
      .catch(() => {})
      .finally(async () => {
        entry.follow = null;
        if (ctl.signal.aborted || !rows.has(id)) return;
        try {
          const job = await api.json(`/v1/jobs/${id}`);
          entry.job = job;
          render(entry);
          if (FINAL.includes(job.status)) onFinished(job);
        } catch {
          /* shown as it was */
        }
      });
  }

  async function load() {
    list.replaceChildren();
    for (const entry of rows.values()) entry.follow?.abort();
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

  /** Jobs submitted elsewhere (curl, asrctl, another tab) appear at the top without a reload. */
  async function refreshTop() {
    if (document.hidden || !loaded) return;
    try {
      const body = await api.json(`/v1/jobs?limit=${PAGE}`);
      for (const job of [...body.data].reverse()) {
        const known = rows.get(job.id);
        if (!known) put(job, { atTop: true });
        else if (!known.follow && known.job.status !== job.status) put(job);
      }
    } catch {
      /* the next round may work */
    }
  }
  setInterval(refreshTop, 5000);

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
      const entry = rows.get(job.id);
      entry?.follow?.abort();
      entry?.li.remove();
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

  return { load, add: (job) => put(job, { atTop: true }), select };
}
