// The browser side of labkernel's REST API: a reader that long-polls output by
// byte offset and a writer that POSTs keystrokes, with the retries, backoff and
// flow control that make a terminal survive a flaky network.
//
// This module touches no DOM and no globals it was not handed: the HTTP layer,
// the timers and the random source are injected, so `node --test` drives it
// against a fake server (js/test/). Both the notebook widget and the stand-alone
// page use it.

/** The states of the status line, as `data-state` shows them. */
export const STATES = Object.freeze([
  "connecting", "connected", "reconnecting", "ended", "expired",
  "not_found", "forbidden", "unavailable",
]);

/** States after which the transport makes no more requests. */
export const FINAL_STATES = Object.freeze(["ended", "expired", "not_found", "forbidden", "unavailable"]);

const LIVE = new Set(["starting", "running"]);

/**
 * Delay before retry number `attempt` (1, 2, …): exponential, capped, with
 * "equal jitter" (half fixed, half random) so that many clients cut off at once
 * by a proxy do not come back in lock step, yet none retries at once.
 */
export function backoffDelay(attempt, { base = 250, cap = 10000, random = Math.random } = {}) {
  const ceiling = Math.min(cap, base * 2 ** Math.max(0, attempt - 1));
  return ceiling / 2 + random() * (ceiling / 2);
}

// -- HTTP layers -------------------------------------------------------------------
// An HTTP layer is `(method, url, {headers, body, signal}) => Promise<{status, text}>`
// that rejects on a network failure or an abort. Two are here because they measure
// differently in Chromium (a throwaway prototype saw 26.6 ms p50 keystroke echo over
// fetch and 13.6 ms over XMLHttpRequest); the benchmark picks by name.

function abortError() {
  const e = new Error("aborted");
  e.name = "AbortError";
  return e;
}

/** An HTTP layer over `fetch` (same-origin credentials, never cached). */
export function fetchHttp(fetchImpl = globalThis.fetch) {
  return async (method, url, { headers = {}, body = null, signal } = {}) => {
    const response = await fetchImpl(url, {
      method, headers, body, signal, credentials: "same-origin", cache: "no-store",
    });
    return { status: response.status, text: await response.text() };
  };
}

/** An HTTP layer over XMLHttpRequest (sends same-origin cookies by default). */
export function xhrHttp(XHR = globalThis.XMLHttpRequest) {
  return (method, url, { headers = {}, body = null, signal } = {}) =>
    new Promise((resolve, reject) => {
      if (signal?.aborted) {
        reject(abortError());
        return;
      }
      const xhr = new XHR();
      const onAbort = () => xhr.abort();
      const done = () => signal?.removeEventListener("abort", onAbort);
      xhr.open(method, url, true);
      for (const [name, value] of Object.entries(headers)) xhr.setRequestHeader(name, value);
      xhr.onload = () => { done(); resolve({ status: xhr.status, text: xhr.responseText }); };
      xhr.onerror = () => { done(); reject(new Error(`network error on ${method} ${url}`)); };
      xhr.onabort = () => { done(); reject(abortError()); };
      signal?.addEventListener("abort", onAbort, { once: true });
      xhr.send(body);
    });
}

/** The HTTP layer called `name` ("xhr" or "fetch"); XHR unless told otherwise. */
export function httpLayer(name) {
  if (name === "fetch") return fetchHttp(globalThis.fetch.bind(globalThis));
  return xhrHttp();
}

/** The `_xsrf` cookie's value, as Tornado wants it back in `X-XSRFToken`. */
export function xsrfFromCookie(cookie) {
  const match = /(?:^|;\s*)_xsrf=([^;]*)/.exec(cookie || "");
  return match ? match[1] : "";
}

/**
 * The REST API of one Jupyter server: base URL, credentials, JSON in and out.
 *
 * `request` resolves `{status, body}` for every HTTP answer, error answers
 * included (body: the parsed JSON or null), and rejects only when no answer
 * came: a network error, an abort, or `timeout` ms without an answer.
 */
export class Api {
  constructor({ baseUrl = "/", token = "", http, xsrf = () => "", timers = globalThis }) {
    this.baseUrl = baseUrl.endsWith("/") ? baseUrl : `${baseUrl}/`;
    this.token = token;
    this.http = http;
    this.xsrf = xsrf;
    this.timers = timers;
  }

  url(path) {
    return this.baseUrl + path;
  }

  /** What signs a request in: the token if the page has one, and the login cookie's
   * XSRF value on every request, GETs too: JupyterHub's single-user servers refuse a
   * cookie-signed GET made by a script (`Sec-Fetch-Mode: cors`) without it (403). */
  authHeaders() {
    const headers = {};
    if (this.token) headers.Authorization = `token ${this.token}`;
    const xsrf = this.xsrf();
    if (xsrf) headers["X-XSRFToken"] = xsrf;
    return headers;
  }

  async request(method, path, { body, signal, timeout = 60000 } = {}) {
    const headers = { Accept: "application/json", ...this.authHeaders() };
    let payload = null;
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(body);
    }
    // A proxy may keep a connection open and never answer: give up on it.
    const controller = new AbortController();
    const onAbort = () => controller.abort();
    signal?.addEventListener("abort", onAbort, { once: true });
    const timer = this.timers.setTimeout(() => controller.abort(), timeout);
    try {
      if (signal?.aborted) throw abortError();
      const { status, text } = await this.http(method, this.url(path), {
        headers, body: payload, signal: controller.signal,
      });
      let parsed = null;
      try {
        parsed = text ? JSON.parse(text) : null;
      } catch {
        parsed = null; // an HTML error page of a proxy, say
      }
      return { status, body: parsed };
    } finally {
      this.timers.clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    }
  }

  /** Start a session of `labId`; resolves the session object or rejects with `{status, body}`. */
  async start(labId, rows, cols) {
    const body = { labId: labId || "shell" };
    if (rows) body.rows = rows;
    if (cols) body.cols = cols;
    const answer = await this.request("POST", "api/labs/start", { body });
    if (answer.status !== 201) throw answer;
    return answer.body;
  }

  /** Whether this server runs labkernel (its `/health` answers as ours does). */
  async healthy() {
    try {
      const answer = await this.request("GET", "health", { timeout: 15000 });
      return answer.status === 200 && answer.body?.transport === "http-polling";
    } catch {
      return false;
    }
  }
}

// -- A page-wide budget of long polls ------------------------------------------------

/**
 * Chromium opens at most six HTTP/1.1 connections per host, and a long poll holds
 * one for up to 25 s. A page with several terminals must leave connections for
 * keystrokes and for JupyterLab's own requests, so the terminals of a page share
 * a few long-poll slots; a terminal that finds none free polls with `wait=0` on a
 * timer instead (and at once after each keystroke it sends).
 */
export class PollBudget {
  constructor(slots = 3) {
    this.slots = slots;
    this.used = 0;
  }

  /** A release function if a slot was free, else null. */
  tryAcquire() {
    if (this.used >= this.slots) return null;
    this.used += 1;
    let released = false;
    return () => {
      if (!released) {
        released = true;
        this.used -= 1;
      }
    };
  }
}

/** The budget shared by every terminal of this page (widgets load the module more than once). */
export function pageBudget() {
  const key = "__labkernelPollBudget";
  globalThis[key] ??= new PollBudget(3);
  return globalThis[key];
}

/**
 * `text` cut into pieces of at most `size` UTF-16 units, never inside a surrogate
 * pair. xterm parses each write() as one task and yields to the page only between
 * writes, so a 1 MiB answer written whole blocks the page for hundreds of ms.
 */
export function pieces(text, size = 16384) {
  const out = [];
  let start = 0;
  while (start < text.length) {
    let end = Math.min(start + size, text.length);
    const code = text.charCodeAt(end - 1);
    if (end < text.length && code >= 0xd800 && code <= 0xdbff) end += end - start > 1 ? -1 : 1;
    out.push(text.slice(start, end));
    start = end;
  }
  return out;
}

// -- The session transport ---------------------------------------------------------

/** The most characters in one input POST: 8192 × 6 (a JSON-escaped control byte) stays under 64 KiB. */
export const MAX_INPUT_CHARS = 8192;

function randomId() {
  const bytes = new Uint8Array(12);
  globalThis.crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * One client of one session: reads its output from an offset and writes input.
 *
 * Output: each answer's data is handed to `onOutput(data, done, {replay})`, and
 * the next request goes out only when `done()` is called (the terminal has drawn
 * it): a terminal that falls behind stops asking, and the server's flow control
 * then pauses the program. After an error the same offset is asked again, after a
 * backoff, so nothing is lost or repeated.
 *
 * Replay: the bytes before `liveFrom` are history, output the session produced
 * before this client attached, and come with `replay: true`; a terminal draws
 * them without answering the queries in them (the program that asked is gone, or
 * was answered by the view that was there). `liveFrom: null` (the default) asks
 * the server: the session's `outputOffset` when it answers the status request
 * made before the first read. A client that started the session itself passes 0:
 * it was there from the first byte. Replayed answers never run past `liveFrom`
 * (each read asks for at most the bytes up to it), so no answer is part history
 * and part live.
 *
 * Input: `send(data)` queues keystrokes; one POST is in flight at a time and
 * carries everything queued (coalescing), with an increasing `seq`. A POST that
 * got no answer is retried with the same body, which the server acknowledges as
 * a duplicate if the first one did arrive.
 *
 * `onState({name, attempt, exitCode, message})` follows STATES.
 */
export class SessionTransport {
  constructor({
    api, sessionId, clientId = randomId(), offset = 0, wait = 25, liveFrom = null,
    onOutput = (_data, done) => done(), onState = () => {},
    timers = globalThis, random = Math.random, budget = new PollBudget(Infinity),
    shortInterval = 1000, activeInterval = 150, backoff = {}, now = () => Date.now(),
  }) {
    Object.assign(this, {
      api, sessionId, clientId, offset, wait, liveFrom, onOutput, onState, timers, random, budget,
      shortInterval, activeInterval, backoff, now,
    });
    this.dropped = 0; // bytes the server no longer had, not yet reported
    this.state = { name: "connecting", attempt: 0, exitCode: null, message: "" };
    this.seq = 0;
    this.queue = []; // {kind: "data", data} | {kind: "resize", rows, cols} | {kind: "signal", signal}
    this.inflight = null; // the body of the POST in flight (or waiting to be retried)
    this.readFailures = 0;
    this.writeFailures = 0;
    this.lastInput = -Infinity;
    this.disposed = false;
    this.reading = false; // a poll is in flight, or data is being drawn
    this.confirmed = false; // a poll has been answered since the last failure
    this.pollTimer = null;
    this.writeTimer = null;
    this.pollAbort = null;
    this.writeAbort = null;
    this.release = null;
  }

  get final() {
    return FINAL_STATES.includes(this.state.name);
  }

  /** Whether output from before this client attached may still come (see `liveFrom`). */
  get inHistory() {
    return this.liveFrom === null || this.offset < this.liveFrom;
  }

  start() {
    this.onState({ ...this.state });
    this._poll();
    return this;
  }

  // -- state ---------------------------------------------------------------------

  _setState(name, extra = {}) {
    if (this.disposed || this.final) return;
    const next = { name, attempt: 0, exitCode: null, message: "", ...extra };
    const s = this.state;
    if (s.name === next.name && s.attempt === next.attempt && s.exitCode === next.exitCode) return;
    this.state = next;
    if (this.final) this._stopAll();
    this.onState({ ...next });
  }

  _failed(kind) {
    const attempt = kind === "read" ? ++this.readFailures : ++this.writeFailures;
    this._setState("reconnecting", { attempt: Math.max(this.readFailures, this.writeFailures) });
    return backoffDelay(attempt, { ...this.backoff, random: this.random });
  }

  /** Map an error answer to a final state; true if it was one. */
  _finalAnswer(answer) {
    const code = answer.body?.error;
    const message = answer.body?.message || "";
    if (answer.status === 404 && code !== "not_found") {
      this._setState("not_found", { message });
      return true;
    }
    if (answer.status === 404) {
      // A 404 without session_not_found: no labkernel behind this URL at all.
      this._setState("unavailable", { message });
      return true;
    }
    if (answer.status === 401 || answer.status === 403) {
      // Retrying cannot help: the learner has to sign in again.
      this._setState("forbidden", { message });
      return true;
    }
    return false;
  }

  // -- output --------------------------------------------------------------------

  _sessionPath(route) {
    return `api/ws/${route}/${encodeURIComponent(this.sessionId)}`;
  }

  async _poll() {
    this.pollTimer = null;
    if (this.disposed || this.final || this.reading) return;
    if (this.liveFrom === null) {
      this._findLiveFrom();
      return;
    }
    this.reading = true;
    const confirming = !this.confirmed;
    const replay = this.offset < this.liveFrom;
    // The first answer after (re)connecting comes at once, so the status line turns
    // "connected" without waiting for output; after that, long polls when a slot is
    // free. History is there already: no long poll, no slot for it.
    this.release = this.confirmed && !replay ? this.budget.tryAcquire() : null;
    const wait = this.release ? this.wait : 0;
    const controller = new AbortController();
    this.pollAbort = controller;
    const path = `${this._sessionPath("output")}?offset=${this.offset}&wait=${wait}`
      + `&clientId=${encodeURIComponent(this.clientId)}`
      + (replay ? `&max=${this.liveFrom - this.offset}` : "");
    let answer;
    try {
      answer = await this.api.request("GET", path, {
        signal: controller.signal, timeout: (wait + 20) * 1000,
      });
    } catch {
      answer = null;
    } finally {
      this.release?.();
      this.release = null;
      this.pollAbort = null;
    }
    if (this.disposed || this.final) return;
    if (!answer || answer.status !== 200 || !answer.body) {
      if (answer && this._finalAnswer(answer)) return;
      this.reading = false;
      this.confirmed = false;
      this._schedulePoll(this._failed("read"));
      return;
    }
    this.readFailures = 0;
    this.confirmed = true;
    if (this.writeFailures === 0) this._setState("connected");
    const { data, offset, nextOffset, status, exitCode } = answer.body;
    // Where the server no longer had our offset it starts later: say so.
    this.dropped += offset > this.offset ? offset - this.offset : 0;
    if (replay && offset > this.offset && offset < this.liveFrom && nextOffset > this.liveFrom) {
      // It started later than asked, so `max` did not stop it at the boundary: this
      // answer is part history, part live. Ask again from where it starts.
      this.offset = offset;
      this.reading = false;
      this._poll();
      return;
    }
    const gap = this.dropped;
    this.dropped = 0;
    this.offset = nextOffset;
    if (data || gap) {
      const text = gap ? `\r\n\x1b[2m[${gap} bytes of output were dropped]\x1b[0m\r\n${data}` : data;
      let called = false;
      this.onOutput(text, () => {
        if (called) return;
        called = true;
        this.reading = false;
        this._poll(); // flow control: ask for more only once this is drawn
      }, { replay: offset < this.liveFrom });
      return;
    }
    this.reading = false;
    if (!LIVE.has(status)) {
      if (status === "expired") this._setState("expired");
      else this._setState("ended", { exitCode: exitCode ?? null, status });
      return;
    }
    if (wait > 0 || confirming) this._poll();
    else this._schedulePoll(this.now() - this.lastInput < 5000 ? this.activeInterval : this.shortInterval);
  }

  /** Where live output starts: the session's output offset now (see the class comment). */
  async _findLiveFrom() {
    this.reading = true;
    const controller = new AbortController();
    this.pollAbort = controller;
    let answer;
    try {
      answer = await this.api.request("GET", this._sessionPath("status"), {
        signal: controller.signal, timeout: 20000,
      });
    } catch {
      answer = null;
    } finally {
      this.pollAbort = null;
    }
    if (this.disposed || this.final) return;
    this.reading = false;
    const outputOffset = answer?.status === 200 ? answer.body?.outputOffset : undefined;
    if (Number.isInteger(outputOffset) && outputOffset >= 0) {
      this.liveFrom = outputOffset;
      this._poll();
      return;
    }
    if (answer && this._finalAnswer(answer)) return;
    this.confirmed = false;
    this._schedulePoll(this._failed("read"));
  }

  _schedulePoll(delay) {
    if (this.disposed || this.final || this.reading) return;
    if (this.pollTimer !== null) this.timers.clearTimeout(this.pollTimer);
    this.pollTimer = this.timers.setTimeout(() => this._poll(), delay);
  }

  /** Poll now if the reader is waiting on a timer (not in a backoff after an error). */
  _kick() {
    if (this.pollTimer !== null && this.readFailures === 0) this._schedulePoll(0);
  }

  // -- input ---------------------------------------------------------------------

  /** Queue keystrokes (any length: long pastes go out in pieces, in order). */
  send(data) {
    if (!data || this.disposed || this.final) return;
    const last = this.queue[this.queue.length - 1];
    if (last?.kind === "data") last.data += data;
    else this.queue.push({ kind: "data", data });
    this._flush();
  }

  /** Queue a resize; only the latest pending one is sent. */
  resize(rows, cols) {
    if (this.disposed || this.final || !(rows > 0 && cols > 0)) return;
    const last = this.queue[this.queue.length - 1];
    if (last?.kind === "resize") Object.assign(last, { rows, cols });
    else this.queue.push({ kind: "resize", rows, cols });
    this._flush();
  }

  /** Queue a signal for the foreground program (SIGINT, …). */
  signal(name) {
    if (this.disposed || this.final) return;
    this.queue.push({ kind: "signal", signal: name });
    this._flush();
  }

  _take() {
    const head = this.queue[0];
    if (head.kind === "resize") {
      this.queue.shift();
      return { type: "resize", rows: head.rows, cols: head.cols };
    }
    if (head.kind === "signal") {
      this.queue.shift();
      return { type: "signal", signal: head.signal };
    }
    let cut = Math.min(head.data.length, MAX_INPUT_CHARS);
    // Never split a surrogate pair between two POSTs: each must be valid text.
    const code = head.data.charCodeAt(cut - 1);
    if (cut < head.data.length && code >= 0xd800 && code <= 0xdbff) cut -= 1;
    const data = head.data.slice(0, cut);
    if (cut === head.data.length) this.queue.shift();
    else head.data = head.data.slice(cut);
    return { data };
  }

  _flush() {
    if (this.inflight || this.writeTimer !== null || this.disposed || this.final || !this.queue.length) return;
    this.seq += 1;
    this.inflight = { sessionId: this.sessionId, ...this._take(), seq: this.seq, clientId: this.clientId };
    this._post();
  }

  async _post() {
    this.writeTimer = null;
    const body = this.inflight;
    if (!body || this.disposed || this.final) return;
    this.lastInput = this.now();
    const controller = new AbortController();
    this.writeAbort = controller;
    let answer;
    try {
      answer = await this.api.request("POST", "api/ws/message", { body, signal: controller.signal, timeout: 30000 });
    } catch {
      answer = null;
    } finally {
      this.writeAbort = null;
    }
    if (this.disposed || this.final) return;
    const status = answer?.status;
    if (status === 200 || status === 400 || status === 413 || status === 409) {
      // 400/413: this body can never succeed; drop it rather than block all input.
      // 409: the session ended; the reader reports how.
      this.inflight = null;
      if (status === 409) this.queue = [];
      if (this.writeFailures) {
        this.writeFailures = 0;
        if (this.readFailures === 0 && this.confirmed) this._setState("connected");
      }
      this._kick();
      this._flush();
      return;
    }
    if (answer && this._finalAnswer(answer)) return;
    // No answer, or a 5xx/429 from a proxy or a restarting server: the same body again.
    const delay = this._failed("write");
    this.writeTimer = this.timers.setTimeout(() => this._post(), delay);
  }

  // -- lifetime ------------------------------------------------------------------

  _stopAll() {
    if (this.pollTimer !== null) this.timers.clearTimeout(this.pollTimer);
    if (this.writeTimer !== null) this.timers.clearTimeout(this.writeTimer);
    this.pollTimer = this.writeTimer = null;
    this.pollAbort?.abort();
    this.writeAbort?.abort();
    this.release?.();
    this.release = null;
    this.queue = [];
    this.inflight = null;
  }

  /** Stop every request and timer; nothing is called back after this. */
  dispose() {
    if (this.disposed) return;
    this.disposed = true;
    this._stopAll();
  }
}
