// The public API, as any client calls it. The key (when the server wants one) travels in the
// Authorization header only — never in a URL — so the event stream is read with fetch, not
// EventSource (which cannot send headers).

export class ApiError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const STORE = "asr-api-key";

export class Api {
  /** askKey(reason) resolves to a key, or null when the user gives none. */
  constructor(askKey) {
    this.askKey = askKey;
    this.key = sessionStorage.getItem(STORE) || null;
    this.onKeyChange = () => {};
  }

  setKey(key, remember) {
    this.key = key || null;
    if (key && remember) sessionStorage.setItem(STORE, key);
    else sessionStorage.removeItem(STORE);
    this.onKeyChange(this.key);
  }

  headers(extra = {}) {
    return this.key ? { ...extra, Authorization: `Bearer ${this.key}` } : { ...extra };
  }

  /**
   * fetch with the key; a 401 asks for a key once and retries — unless `prompt: false` (background
   * polling), where a 401 is thrown as it is, with no dialog.
   */
  async fetch(path, options = {}, retried = false) {
    const { prompt = true, ...init } = options;
    let response;
    try {
      response = await fetch(path, { ...init, headers: this.headers(init.headers) });
    } catch (err) {
      if (err.name === "AbortError") throw err;
      throw new ApiError(0, "the server cannot be reached", "network");
    }
    if (response.status === 401 && !retried && prompt) {
      const reason = await messageOf(response);
      const key = await this.askKey(reason);
      if (key) return this.fetch(path, options, true);
      throw new ApiError(401, reason, "unauthorized");
    }
    if (!response.ok && response.status !== 206) {
      const code = response.status === 401 ? "unauthorized" : `http_${response.status}`;
      throw new ApiError(response.status, await messageOf(response), code);
    }
    return response;
  }

  async json(path, options = {}) {
    return (await this.fetch(path, options)).json();
  }

  /**
   * Follow a job's server-sent events: onEvent(type, data) for each, resuming after the last id
   * when the stream drops (a daemon restart, a network cut): retried with a backoff capped at 5 s for
   * as long as it takes, the count starting again at each event. Resolves after the final event or
   * when `signal` aborts; throws on 401, 403 or 404 (no key, not this key's job, deleted).
   */
  async follow(jobId, onEvent, signal) {
    let last = null;
    let attempt = 0;
    while (!signal.aborted) {
      if (attempt) {
        await sleep(Math.min(5000, 500 * attempt), signal);
        if (signal.aborted) return;
      }
      attempt++;
      try {
        const headers = last === null ? {} : { "Last-Event-ID": last };
        const response = await this.fetch(`/v1/jobs/${jobId}/events`, { headers, signal });
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value.replace(/\r\n/g, "\n");
          let cut;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, cut);
            buffer = buffer.slice(cut + 2);
            const ev = parseEvent(block);
            if (!ev) continue;
            attempt = 0;
            if (ev.id !== null) last = ev.id;
            onEvent(ev.type, ev.data);
            if (["completed", "failed", "cancelled"].includes(ev.type)) return;
          }
        }
      } catch (err) {
        if (signal.aborted || err.name === "AbortError") return;
        if (err instanceof ApiError && [401, 403, 404].includes(err.status)) throw err;
      }
    }
  }
}

function parseEvent(block) {
  let type = "message", data = "", id = null;
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") type = value;
    else if (field === "data") data += value;
    else if (field === "id") id = value;
  }
  if (!data) return null;
  try {
    return { type, data: JSON.parse(data), id };
  } catch {
    return null;
  }
}

async function messageOf(response) {
  try {
    const body = await response.json();
    return body?.error?.message || `HTTP ${response.status}`;
  } catch {
    return `HTTP ${response.status}`;
  }
}

/** Resolves after `ms`, or at once when `signal` (optional) aborts. */
export function sleep(ms, signal) {
  return new Promise((resolve) => {
    const onAbort = () => {
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
