// Record from the microphone (MediaRecorder) and send the recording as a job.

export function setupRecorder({ send, onSubmitted, notice }) {
  const button = document.getElementById("record");
  const status = document.getElementById("record-status");
  if (!navigator.mediaDevices?.getUserMedia || typeof MediaRecorder === "undefined") {
    button.disabled = true;
    button.title = "This browser cannot record here (recording needs https or localhost).";
    return;
  }
  let recorder = null;
  let started = 0;
  let timer = null;

  async function start() {
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch (err) {
      notice(`The microphone is not available: ${err.message}`, true);
      return;
    }
    const chunks = [];
    recorder = new MediaRecorder(stream);
    recorder.addEventListener("dataavailable", (e) => e.data.size && chunks.push(e.data));
    recorder.addEventListener("stop", async () => {
      stream.getTracks().forEach((t) => t.stop());
      clearInterval(timer);
      status.textContent = "";
      const type = recorder.mimeType || "audio/webm";
      const ext = type.includes("ogg") ? "ogg" : type.includes("mp4") ? "m4a" : "webm";
      const name = `recording-${new Date().toISOString().slice(0, 19).replace(/:/g, "-")}.${ext}`;
      recorder = null;
      try {
        const job = await send(new Blob(chunks, { type }), name);
        notice(`${name}: queued.`, false, job.id);
        onSubmitted(job);
      } catch (err) {
        notice(`${name}: ${err.message}`, true);
      }
    });
    recorder.start(1000);
    started = Date.now();
    button.textContent = "Stop recording";
    button.setAttribute("aria-pressed", "true");
    timer = setInterval(() => {
      status.textContent = `recording ${Math.round((Date.now() - started) / 1000)} s`;
    }, 500);
  }

  function stop() {
    button.textContent = "Record";
    button.setAttribute("aria-pressed", "false");
    recorder.stop();
  }

  button.addEventListener("click", () => (recorder ? stop() : start()));
}
