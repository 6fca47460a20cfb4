// Speakers (diarization): the upload options ("Speakers", number of speakers), each segment's speaker
// in the transcript view, and renaming a speaker (PATCH /v1/jobs/{id}/speakers) — the new name then
// shows on every segment of that speaker and in the speakers bar at once.
//
// Segments carry their speaker's display name (a name once given, else the label A, B, …) and its
// label (`speaker_label`, which a rename does not change: a name may look like another label); the
// job's `speakers` summary (GET /v1/jobs/{id}) maps labels to names.

import { clock, h } from "./dom.js";

const MAX_NAME = 100;

/** The upload form's options: returns entries() → [name, value] pairs for the request. */
export function speakerFields(container) {
  const check = h("input", { id: "opt-speakers", type: "checkbox", name: "diarize" });
  const count = h("input", {
    id: "opt-num-speakers", type: "number", name: "num_speakers", min: "1", max: "32", step: "1",
    placeholder: "auto", inputmode: "numeric", class: "num", disabled: true,
  });
  check.addEventListener("change", () => {
    count.disabled = !check.checked;
  });
  container.classList.add("speaker-options");
  container.append(
    h("label", { class: "check" }, check, " Speakers"),
    h("label", {}, "Number of speakers", count),
  );
  return {
    entries() {
      if (!check.checked) return [];
      const n = Number.parseInt(count.value, 10);
      return Number.isInteger(n) && n >= 1 && n <= 32 ? [["diarize", "true"], ["num_speakers", String(n)]] : [["diarize", "true"]];
    },
  };
}

export function speakerLabel(segment) {
  return segment && typeof segment.speaker === "string" && segment.speaker ? segment.speaker : null;
}

/** The transcript view's speakers: a bar listing them, a chip per segment, and the rename dialog. */
export function setupSpeakers(api, { notice }) {
  const bar = document.getElementById("speakers");
  const dialog = document.getElementById("speaker-dialog");
  const form = document.getElementById("speaker-form");
  const input = document.getElementById("speaker-name");
  const was = document.getElementById("speaker-was");
  let jobId = null;
  let people = []; // [{label, name, seconds}]
  let editing = null;

  function reset() {
    jobId = null;
    people = [];
    bar.replaceChildren();
    bar.hidden = true;
  }

  /** Read the job's speakers (when its segments name any) before the segments are drawn. */
  async function load(job, segments) {
    reset();
    if (!segments.some((s) => speakerLabel(s))) return;
    try {
      const full = await api.json(`/v1/jobs/${job.id}`);
      people = Array.isArray(full.speakers?.speakers) ? full.speakers.speakers : [];
    } catch {
      people = [];
    }
    jobId = job.id;
    drawBar();
  }

  function nameOf(label) {
    return people.find((p) => p.label === label)?.name || label;
  }

  function drawBar() {
    bar.replaceChildren();
    bar.hidden = !people.length;
    if (!people.length) return;
    bar.append(h("span", { class: "muted" }, "Speakers"));
    for (const p of people) {
      bar.append(
        h("button", {
          type: "button", class: "speaker-chip", dataset: { label: p.label },
          "aria-label": `Rename speaker ${p.name || p.label}`, title: `${clock(p.seconds)} of speech — click to rename`,
          onclick: () => ask(p.label),
        }, p.name || p.label),
      );
    }
  }

  /** The speaker shown before a segment: a button that renames it (a plain label while unknown). */
  function chip(shown, segLabel) {
    const label = jobId && people.some((p) => p.label === segLabel) ? segLabel : null;
    if (!label) return h("span", { class: "speaker" }, shown);
    return h("button", {
      type: "button", class: "speaker", dataset: { label },
      "aria-label": `Rename speaker ${shown}`,
      onclick: (e) => {
        e.stopPropagation();
        ask(label);
      },
    }, nameOf(label));
  }

  function ask(label) {
    editing = label;
    was.textContent = label === nameOf(label) ? `Speaker ${label}` : `Speaker ${label}, now “${nameOf(label)}”`;
    input.value = nameOf(label) === label ? "" : nameOf(label);
    input.maxLength = MAX_NAME;
    dialog.showModal();
    input.focus();
  }

  async function rename(label, name) {
    const id = jobId;
    try {
      const response = await api.fetch(`/v1/jobs/${id}/speakers`, {
        method: "PATCH",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ [label]: name || null }),
      });
      const body = await response.json();
      if (id !== jobId) return;
      for (const p of people) p.name = body.speakers?.[p.label] ?? p.name;
      drawBar();
      for (const el of document.querySelectorAll("#segments .speaker[data-label]")) {
        const shown = nameOf(el.dataset.label);
        el.textContent = shown;
        el.setAttribute("aria-label", `Rename speaker ${shown}`);
      }
      notice(name ? `Speaker ${label} is now “${name}”.` : `Speaker ${label} has no name again.`);
    } catch (err) {
      notice(err.message, true);
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const label = editing;
    const submitter = event.submitter?.value;
    dialog.close();
    if (submitter === "save" && label) rename(label, input.value.trim());
  });
  document.getElementById("speaker-cancel").addEventListener("click", () => dialog.close());

  return { reset, load, chip };
}
