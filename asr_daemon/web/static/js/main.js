// The page: wires the modules together. Each part talks to the public API through one Api object.

import { Api } from "./api.js";
import { keyPrompt } from "./auth.js";
import { setupJobs } from "./jobs.js";
import { setupLive } from "./live.js";
import { setupRecorder } from "./recorder.js";
import { setupSearch } from "./search.js";
import { setupTranscript } from "./transcript.js";
import { setupUpload } from "./upload.js";

const noticeEl = document.getElementById("notice");
/** Say `text` in the notice line; `about` (a job id) lets that job's end replace it (see `ended`). */
function notice(text, isError = false, about = "") {
  noticeEl.textContent = text;
  noticeEl.classList.toggle("error", isError);
  noticeEl.dataset.job = about;
}
/** A job has ended: a notice still about it ("x.wav: queued.") says how. */
function ended(job) {
  if (!job.id || noticeEl.dataset.job !== job.id) return;
  const name = job.filename || "the job";
  if (job.status === "completed") notice(`${name}: transcribed.`);
  else if (job.status === "failed") notice(`${name}: failed: ${job.error?.message || "no reason given"}`, true);
  else notice(`${name}: ${job.status}.`);
}

const prompt = keyPrompt();
const api = new Api((reason) => prompt.ask(reason));
prompt.bind(api);

// the open job's event stream (the page's only one) also updates that job's row
const transcript = setupTranscript(api, { notice, onEvent: (id, type, data) => jobs.event(id, type, data) });
const jobs = setupJobs(api, {
  notice,
  onOpen: (job, how) => transcript.open(job, how),
  onFinished: (job) => {
    ended(job);
    transcript.finished(job);
  },
});
const upload = setupUpload(api, {
  notice,
  onSubmitted: (job) => {
    jobs.add(job);
    jobs.select(job.id, {});
  },
});
setupRecorder({ send: upload.send, notice, onSubmitted: (job) => { jobs.add(job); jobs.select(job.id, {}); } });
setupSearch(api, { openAt: (jobId, at) => jobs.select(jobId, { at, play: true }) });
setupLive(api, {
  notice,
  busy: (on) => (document.getElementById("record").disabled = on),
  onJob: (job, open = false) => {
    jobs.add(job);
    if (open) jobs.select(job.id, {});
  },
});

/** `#job=<id>&t=<seconds>`: a link to a job, at a second (what a search hit opens). */
function fromHash() {
  const params = new URLSearchParams(location.hash.slice(1));
  const id = params.get("job");
  if (!id || !/^[0-9a-f-]{36}$/.test(id)) return;
  const t = Number.parseFloat(params.get("t") || "");
  jobs.select(id, Number.isFinite(t) ? { at: t, play: false } : {});
}
window.addEventListener("hashchange", fromHash);

await jobs.load();
await upload.loadModels();
fromHash();
document.body.dataset.ready = "true";
