// Live dictation: microphone → AudioWorklet (24 kHz PCM16) → WebSocket /v1/realtime (OpenAI's Realtime
// transcription protocol) → text on the page as the person speaks. The session is a job of kind
// "live": it appears in Jobs while it runs and opens like any transcript once stopped.
//
// The key never rides on the socket: a short-lived client secret (POST /v1/realtime/client_secrets,
// made with the Authorization header) is passed in the subprotocol `openai-insecure-api-key.<secret>`
// beside `realtime`, as browsers cannot set headers on a WebSocket. Never in the URL.

import { h } from "./dom.js";

const EV = "conversation.item.input_audio_transcription.";
const MAX_QUEUE = 300; // 30 s of audio may wait for the session to be configured
const FINISH_MS = 20000; // after Stop, how long the last utterance may take to come back

export function setupLive(api, { notice, onJob, busy }) {
  const button = document.getElementById("live");
  const panel = document.getElementById("live-panel");
  const status = document.getElementById("live-status");
  const lines = document.getElementById("live-lines");
  if (!navigator.mediaDevices?.getUserMedia || typeof AudioWorkletNode === "undefined" || !window.isSecureContext) {
    button.disabled = true;
    button.title = "Live transcription needs a microphone, which browsers allow on https or localhost.";
    return null;
  }
  let s = null; // the running session: {ws, ctx, stream, node, queue, ready, items, pending, speaking, jobId, stopping}

  function show(text) {
    status.textContent = text;
  }

  function setButton(label, pressed, disabled = false) {
    button.textContent = label;
    button.setAttribute("aria-pressed", pressed ? "true" : "false");
    button.disabled = disabled;
  }

  function item(id) {
    let it = s.items.get(id);
    if (!it) {
      const text = h("span", { class: "live-text" });
      const li = h("li", { class: "live-line", dataset: { item: id } }, text);
      lines.append(li);
      it = { li, text };
      s.items.set(id, it);
    }
    return it;
  }

  function send(event) {
    if (s?.ws.readyState === WebSocket.OPEN) s.ws.send(JSON.stringify(event));
  }

  function onAudio(buffer) {
    if (!s || s.stopped) return;
    const audio = { type: "input_audio_buffer.append", audio: base64(buffer) };
    if (s.ready) send(audio);
    else if (s.queue.length < MAX_QUEUE) s.queue.push(audio);
  }

  function onEvent(ev) {
    const state = s;
    if (!state || typeof ev?.type !== "string") return;
    switch (ev.type) {
      case "session.updated":
        state.ready = true;
        state.jobId = ev.session?.job_id || null;
        for (const audio of state.queue.splice(0)) send(audio);
        show(state.stopping ? "Finishing…" : "Listening — speak now.");
        if (state.jobId) api.json(`/v1/jobs/${state.jobId}`).then(onJob).catch(() => {});
        break;
      case "input_audio_buffer.speech_started":
        state.speaking = ev.item_id;
        item(ev.item_id).li.classList.add("speaking");
        if (!state.stopping) show("Hearing speech…");
        break;
      case "input_audio_buffer.speech_stopped":
        state.speaking = null;
        break;
      case "input_audio_buffer.committed":
        if (state.speaking === ev.item_id) state.speaking = null;
        state.pending.add(ev.item_id);
        break;
      case EV + "delta":
        if (typeof ev.delta === "string") item(ev.item_id).text.append(document.createTextNode(ev.delta));
        break;
      case EV + "completed": {
        const it = item(ev.item_id);
        const text = typeof ev.transcript === "string" ? ev.transcript.trim() : "";
        it.text.replaceChildren(document.createTextNode(text));
        it.li.classList.remove("speaking");
        it.li.classList.add("done");
        if (!text) it.li.remove();
        state.pending.delete(ev.item_id);
        if (!state.stopping) show("Listening — speak now.");
        break;
      }
      case EV + "failed": {
        const it = item(ev.item_id);
        it.li.classList.remove("speaking");
        it.li.classList.add("failed");
        it.text.replaceChildren(document.createTextNode(`(not transcribed: ${ev.error?.message || "error"})`));
        state.pending.delete(ev.item_id);
        break;
      }
      case "error":
        state.lastError = ev.error?.message || "error";
        if (state.stopping) state.speaking = null; // a refused last commit: nothing more to wait for
        else notice(`Live: ${state.lastError}`, true);
        break;
      default:
        break;
    }
    state.changed?.();
  }

  async function start() {
    busy(true);
    setButton("Starting…", true, true);
    lines.replaceChildren();
    panel.hidden = false;
    show("Asking for the microphone…");
    const state = { items: new Map(), pending: new Set(), queue: [], ready: false, speaking: null, jobId: null };
    s = state;
    try {
      state.stream = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: false, noiseSuppression: true, autoGainControl: true },
      });
      show("Connecting…");
      const secret = await api.json("/v1/realtime/client_secrets", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ expires_after: { anchor: "created_at", seconds: 60 } }),
      });
      state.ws = await connect(secret.value);
      state.ws.addEventListener("message", (m) => {
        try {
          onEvent(JSON.parse(m.data));
        } catch {
          /* not an event */
        }
      });
      state.ws.addEventListener("close", (e) => closed(state, e));
      const language = document.getElementById("opt-language").value;
      const model = document.getElementById("opt-model").value;
      send({
        type: "session.update",
        session: {
          type: "transcription",
          audio: {
            input: {
              format: { type: "audio/pcm", rate: 24000 },
              transcription: { model: model || "whisper-1", ...(language ? { language } : {}) },
              turn_detection: { type: "server_vad" },
            },
          },
        },
      });
      state.ctx = new AudioContext();
      await state.ctx.audioWorklet.addModule("/static/js/pcm-worklet.js");
      const source = state.ctx.createMediaStreamSource(state.stream);
      state.node = new AudioWorkletNode(state.ctx, "pcm24k", { numberOfInputs: 1, numberOfOutputs: 0 });
      state.node.port.onmessage = (m) => (m.data instanceof ArrayBuffer ? onAudio(m.data) : state.flushed?.());
      source.connect(state.node);
      await state.ctx.resume();
      if (s !== state) {
        release(state); // the session ended while it was starting: the microphone goes off too
        return;
      }
      setButton("Stop live", true);
    } catch (err) {
      if (state.ended) {
        release(state); // the server closed the session meanwhile: closed() told why
        return;
      }
      state.ended = true;
      notice(`Live: ${err.message || err}`, true);
      show("");
      panel.hidden = true;
      release(state);
      state.ws?.close(1000, "start failed");
      s = null;
      setButton("Live", false);
      busy(false);
    }
  }

  function connect(secret) {
    const url = `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/v1/realtime?intent=transcription`;
    const ws = new WebSocket(url, ["realtime", `openai-insecure-api-key.${secret}`]);
    return new Promise((resolve, reject) => {
      ws.addEventListener("open", () => resolve(ws), { once: true });
      ws.addEventListener("close", (e) => reject(new Error(e.reason || "the server refused the live session")), { once: true });
    });
  }

  /** The microphone and audio graph off (the last partial chunk is sent first). */
  async function silence(state) {
    if (state.node) {
      const flushed = new Promise((resolve) => (state.flushed = resolve));
      state.node.port.postMessage("stop");
      await Promise.race([flushed, sleep(500)]);
    }
    state.stopped = true;
    release(state);
  }

  function release(state) {
    state.stream?.getTracks().forEach((t) => t.stop());
    state.node?.disconnect();
    if (state.ctx && state.ctx.state !== "closed") state.ctx.close().catch(() => {});
  }

  async function stop() {
    const state = s;
    if (!state || state.stopping) return;
    state.stopping = true;
    setButton("Finishing…", true, true);
    show("Finishing…");
    await silence(state);
    if (state.speaking) send({ type: "input_audio_buffer.commit" });
    const deadline = Date.now() + FINISH_MS;
    while ((state.speaking || state.pending.size) && Date.now() < deadline && state.ws.readyState === WebSocket.OPEN) {
      await new Promise((resolve) => {
        state.changed = resolve;
        setTimeout(resolve, 250);
      });
    }
    state.ws.close(1000, "stopped");
  }

  async function closed(state, event) {
    if (state.ended) return;
    state.ended = true;
    if (!state.stopping) {
      const why = state.lastError || event.reason || `code ${event.code}`;
      notice(`Live session ended: ${why}`, event.code !== 1000 || !!state.lastError);
    }
    state.stopping = true;
    await silence(state);
    if (s === state) s = null;
    setButton("Live", false);
    busy(false);
    if (!state.jobId) {
      show("");
      panel.hidden = !lines.children.length;
      return;
    }
    show("Saved as a job.");
    try {
      onJob(await api.json(`/v1/jobs/${state.jobId}`), true);
    } catch (err) {
      notice(err.message, true);
    }
  }

  button.addEventListener("click", () => (s ? stop() : start()));
  return { running: () => s !== null };
}

/** An ArrayBuffer as base64 (in slices: apply() takes a bounded number of arguments). */
function base64(buffer) {
  const bytes = new Uint8Array(buffer);
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
