// AudioWorklet: the microphone's samples (at the AudioContext's rate) as 24 kHz mono PCM16, posted to
// the page every 100 ms. Loaded by live.js with audioWorklet.addModule (a file of the package: the
// page's CSP allows no inline or blob: script).
//
// Resampling integrates and dumps: each output sample is the mean of the input over its 1/24000 s
// (a box filter, fractional samples weighted at the edges), which keeps aliasing low enough for
// speech when the input is faster (44.1/48 kHz) and holds samples when it is slower.

const RATE = 24000;
const CHUNK = 2400; // 100 ms

class Pcm24k extends AudioWorkletProcessor {
  constructor() {
    super();
    this.ratio = sampleRate / RATE; // input samples per output sample
    this.acc = 0;
    this.fill = 0;
    this.out = new Int16Array(CHUNK);
    this.n = 0;
    this.running = true;
    this.port.onmessage = (event) => {
      if (event.data === "stop") {
        this.flush();
        this.running = false;
        this.port.postMessage("stopped");
      }
    };
  }

  emit(value) {
    const v = Math.max(-1, Math.min(1, value));
    this.out[this.n++] = v < 0 ? v * 0x8000 : v * 0x7fff;
    if (this.n === CHUNK) this.flush();
  }

  flush() {
    if (!this.n) return;
    const chunk = this.out.slice(0, this.n);
    this.port.postMessage(chunk.buffer, [chunk.buffer]);
    this.n = 0;
  }

  process(inputs) {
    const channels = inputs[0];
    if (!this.running) return false;
    if (!channels || !channels.length) return true;
    const first = channels[0];
    const count = channels.length;
    const ratio = this.ratio;
    for (let i = 0; i < first.length; i++) {
      let x = first[i];
      for (let c = 1; c < count; c++) x += channels[c][i];
      x /= count;
      let w = 1;
      while (this.fill + w >= ratio) {
        const take = ratio - this.fill;
        this.emit((this.acc + x * take) / ratio);
        w -= take;
        this.acc = 0;
        this.fill = 0;
      }
      this.acc += x * w;
      this.fill += w;
    }
    return true;
  }
}

registerProcessor("pcm24k", Pcm24k);
