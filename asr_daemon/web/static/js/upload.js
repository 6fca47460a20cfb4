// New jobs: files from the picker or dropped on the page, or a microphone recording, with options.

import { h } from "./dom.js";
import { speakerFields } from "./speakers.js";

const LANGUAGES = {
  en: "English", de: "German", fr: "French", es: "Spanish", it: "Italian", pt: "Portuguese", nl: "Dutch",
  sv: "Swedish", da: "Danish", no: "Norwegian", fi: "Finnish", pl: "Polish", cs: "Czech", ru: "Russian",
  uk: "Ukrainian", tr: "Turkish", el: "Greek", ar: "Arabic", he: "Hebrew", hi: "Hindi", ja: "Japanese",
  ko: "Korean", zh: "Chinese", id: "Indonesian", vi: "Vietnamese", ro: "Romanian", hu: "Hungarian",
  ca: "Catalan",
};

export function setupUpload(api, { onSubmitted, notice }) {
  const form = document.getElementById("upload-form");
  const input = document.getElementById("file");
  const drop = document.getElementById("drop");
  const model = document.getElementById("opt-model");
  const language = document.getElementById("opt-language");
  const task = document.getElementById("opt-task");
  const words = document.getElementById("opt-words");

  for (const [code, name] of Object.entries(LANGUAGES).sort((a, b) => a[1].localeCompare(b[1]))) {
    language.append(h("option", { value: code }, name));
  }
  const speakers = speakerFields(document.getElementById("speaker-options"));

  async function loadModels() {
    try {
      const list = await api.json("/v1/models");
      model.replaceChildren(h("option", { value: "" }, "default"));
      for (const m of list.data.filter((m) => m.local)) {
        model.append(h("option", { value: m.id }, m.default ? `${m.id} (default)` : m.id));
      }
    } catch {
      /* the default model still works */
    }
  }

  /** POST /v1/jobs for one file (or recording); returns the job. */
  async function send(file, name = file.name) {
    const body = new FormData();
    body.append("file", file, name);
    if (model.value) body.append("model", model.value);
    if (language.value) body.append("language", language.value);
    body.append("task", task.value);
    if (words.checked) body.append("timestamp_granularities[]", "word");
    for (const [key, value] of speakers.entries()) body.append(key, value);
    const response = await api.fetch("/v1/jobs", { method: "POST", body });
    return response.json();
  }

  async function sendAll(files) {
    for (const file of files) {
      notice(`Uploading ${file.name}…`);
      try {
        const job = await send(file);
        notice(`${file.name}: queued.`, false, job.id);
        onSubmitted(job);
      } catch (err) {
        notice(`${file.name}: ${err.message}`, true);
      }
    }
    input.value = "";
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!input.files.length) {
      notice("Choose an audio file first.", true);
      input.focus();
      return;
    }
    sendAll([...input.files]);
  });
  input.addEventListener("change", () => {
    if (input.files.length) sendAll([...input.files]);
  });
  for (const type of ["dragenter", "dragover"]) {
    document.addEventListener(type, (event) => {
      event.preventDefault();
      drop.classList.add("over");
    });
  }
  for (const type of ["dragleave", "drop"]) {
    document.addEventListener(type, () => drop.classList.remove("over"));
  }
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    const files = [...(event.dataTransfer?.files || [])];
    if (files.length) sendAll(files);
  });

  return { loadModels, send };
}
