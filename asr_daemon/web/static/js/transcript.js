// One job read against its audio: the player, the segments (and words) that seek it when clicked,
// the segment being played highlighted and kept in view; export and copy. An unfinished job is
// followed through its event stream (the page's only one), each event passed on to onEvent(id, type, data).

import { ApiError } from "./api.js";
import { clock, download, fill, h } from "./dom.js";
import { setupSpeakers, speakerLabel } from "./speakers.js";

const EXT = { text: "txt", srt: "srt", vtt: "vtt", verbose_json: "json" };
const FINAL = ["completed", "failed", "cancelled"];

export function setupTranscript(api, { notice, onEvent = () => {} }) {
  const meta = document.getElementById("transcript-meta");
  const errorBox = document.getElementById("transcript-error");
  const player = document.getElementById("player");
  const exportBar = document.getElementById("export");
  const list = document.getElementById("segments");
  let current = null; // {job, segments: [{seg, li, words: [{w, el}]}], live, audio: AbortController}
  let playing = -1;
  let objectUrl = null;
  const speakers = setupSpeakers(api, { notice });

  function title(job) {
    return job.filename || `${job.kind === "live" ? "live session" : "job"} ${job.id.slice(0, 8)}`;
  }

  function showMeta(job) {
    const bits = [job.status, clock(job.audio?.duration_s), job.model, job.language].filter(Boolean);
    fill(meta, h("strong", {}, title(job)), " — ", bits.join(" · "));
    errorBox.hidden = !job.error;
    errorBox.textContent = job.error ? `The job failed: ${job.error.message}` : "";
    exportBar.hidden = job.status !== "completed";
  }

  function reset() {
    current?.live?.abort();
    current?.audio?.abort(); // a job's whole audio (fetched with a key) is not read on for another
    current = null;
    playing = -1;
    list.replaceChildren();
    speakers.reset();
    player.pause();
    player.removeAttribute("src");
    player.hidden = true;
    exportBar.hidden = true;
    errorBox.hidden = true;
    if (objectUrl) URL.revokeObjectURL(objectUrl);
    objectUrl = null;
  }

  async function open(job, how = {}) {
    reset();
    if (!job) {
      meta.textContent = "Choose a job to read its transcript against its audio.";
      return;
    }
    current = { job, segments: [], live: null, audio: null };
    const link = `#job=${job.id}${how.at !== undefined ? `&t=${Math.floor(how.at)}` : ""}`;
    if (location.hash !== link) history.replaceState(null, "", link); // a link to this view
    showMeta(job);
    const audioReady = loadAudio(job);
    if (job.status === "completed") await loadSegments(job);
    else if (!FINAL.includes(job.status)) followLive(job);
    await audioReady;
    if (current?.job.id !== job.id) return; // another job was opened meanwhile
    if (how.at !== undefined) await seek(how.at, how.play);
    if (window.matchMedia("(max-width: 760px)").matches) {
      document.getElementById("transcript").scrollIntoView({ block: "start", behavior: "smooth" }); // one column
    }
  }

  async function loadAudio(job) {
    if (job.audio?.deleted) {
      fill(meta, meta.textContent, " · audio deleted by the retention");
      return;
    }
    player.hidden = false;
    const url = `/v1/jobs/${job.id}/audio`;
    if (!api.key) {
      player.src = url; // the browser asks for byte ranges (206) as it seeks
      return;
    }
    const ctl = new AbortController();
    current.audio = ctl;
    try {
      const blob = await (await api.fetch(url, { signal: ctl.signal })).blob(); // a header can't ride on <audio src>
      if (ctl.signal.aborted || current?.job.id !== job.id) return;
      objectUrl = URL.createObjectURL(blob);
      player.src = objectUrl;
    } catch (err) {
      if (ctl.signal.aborted) return;
      player.hidden = true;
      notice(err instanceof ApiError && err.status === 410 ? "The audio was deleted by the retention." : err.message, true);
    }
  }

  async function loadSegments(job) {
    try {
      const body = await api.json(`/v1/jobs/${job.id}/transcript?format=verbose_json`);
      if (current?.job.id !== job.id) return;
      await speakers.load(job, body.segments);
      if (current?.job.id !== job.id) return;
      const words = body.words || [];
      list.replaceChildren();
      current.segments = [];
      for (const seg of body.segments) {
        const own = words.filter((w) => w.start >= seg.start - 0.01 && w.start < seg.end);
        add({ seq: seg.id, start: seg.start, end: seg.end, text: seg.text, speaker: seg.speaker,
          speaker_label: seg.speaker_label, words: own });
      }
    } catch (err) {
      notice(err.message, true);
    }
  }

  function followLive(job) {
    const ctl = new AbortController();
    current.live = ctl;
    api
      .follow(job.id, (type, data) => {
        if (current?.job.id !== job.id) return;
        onEvent(job.id, type, data);
        if (type === "segment" && !current.segments.some((s) => s.seg.seq === data.seq)) add(data);
        if (type === "started" || type === "segment") {
          current.job.status = "running";
          showMeta(current.job);
        }
      }, ctl.signal)
      .catch((err) => notice(err.message, true));
  }

  function add(seg) {
    const index = current.segments.length;
    const words = [];
    const text = h("span", { class: "seg-text" });
    if (seg.words?.length) {
      for (const w of seg.words) {
        const el = h("span", { class: "word", onclick: (e) => { e.stopPropagation(); seek(w.start, true); } }, w.word);
        words.push({ w, el });
        text.append(el);
      }
    } else {
      text.textContent = seg.text.trim();
    }
    const speaker = speakerLabel(seg);
    const li = h(
      "li",
      { class: "seg", dataset: { seq: String(seg.seq) }, onclick: () => seek(seg.start, true) },
      h("button", { type: "button", class: "time", "aria-label": `Play from ${clock(seg.start)}` }, clock(seg.start)),
      speaker ? speakers.chip(speaker, seg.speaker_label) : null,
      text,
    );
    list.append(li);
    current.segments.push({ seg, li, words });
    if (index === 0) exportBar.hidden = current.job.status !== "completed";
  }

  async function seek(at, play) {
    if (player.hidden) return;
    if (player.readyState < 1) {
      await new Promise((resolve) => {
        player.addEventListener("loadedmetadata", resolve, { once: true });
        player.addEventListener("error", resolve, { once: true });
      });
    }
    player.currentTime = at;
    highlight();
    if (play) {
      try {
        await player.play();
      } catch {
        /* the browser wants a gesture first: the position is set anyway */
      }
    }
  }

  function highlight() {
    if (!current) return;
    const t = player.currentTime;
    const segs = current.segments;
    let found = -1;
    for (let i = 0; i < segs.length; i++) {
      if (segs[i].seg.start <= t + 0.05 && t < segs[i].seg.end) found = i;
    }
    if (found !== playing) {
      if (playing >= 0 && segs[playing]) {
        segs[playing].li.classList.remove("current");
        segs[playing].li.removeAttribute("aria-current");
      }
      playing = found;
      if (found >= 0) {
        segs[found].li.classList.add("current");
        segs[found].li.setAttribute("aria-current", "true");
        segs[found].li.scrollIntoView({ block: "nearest", behavior: "smooth" });
      }
    }
    if (found >= 0) {
      for (const { w, el } of segs[found].words) el.classList.toggle("now", w.start <= t && t < w.end);
    }
  }
  player.addEventListener("timeupdate", highlight);
  player.addEventListener("seeked", highlight);

  exportBar.addEventListener("click", async (event) => {
    const format = event.target.closest("button")?.dataset.format;
    if (!format || !current) return;
    try {
      const response = await api.fetch(`/v1/jobs/${current.job.id}/transcript?format=${format}`);
      const stem = (current.job.filename || current.job.id).replace(/\.[^.]*$/, "");
      download(await response.blob(), `${stem}.${EXT[format]}`);
    } catch (err) {
      notice(err.message, true);
    }
  });

  document.getElementById("copy").addEventListener("click", async () => {
    if (!current) return;
    const text = current.segments.map((s) => s.seg.text.trim()).join("\n");
    try {
      await navigator.clipboard.writeText(text);
    } catch {
      const area = h("textarea", { class: "offscreen" });
      area.value = text;
      document.body.append(area);
      area.select();
      document.execCommand("copy");
      area.remove();
    }
    notice("Transcript copied.");
  });

  return {
    open,
    finished(job) {
      if (current?.job.id === job.id) {
        const at = player.currentTime;
        open(job, at ? { at } : {});
      }
    },
    current: () => current?.job.id ?? null,
  };
}
