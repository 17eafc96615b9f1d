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
 * keystrokes and for JupyterLab's own requests, so the terminals of a page that
 * long-poll (no stream, see PageStream) share a few long-poll slots; a terminal
 * that finds none free polls with `wait=0` on a timer instead. A terminal being
 * typed into takes a slot from one that has not been for 5 s (`steal`), so the
 * one in use never loops on `wait=0` polls (a fourth terminal did: 272 polls for
 * 60 keys, and a 32.6 ms echo; issue 13).
 */
export class PollBudget {
  constructor(slots = 3, { idle = 5000 } = {}) {
    this.slots = slots;
    this.idle = idle;
    this.used = 0;
    this.holders = new Set(); // {lastInput, preempt()} of the slots held
    this.waiting = null; // called when the next slot is free
  }

  /** A release function if a slot was free, else null. `holder`: who may be asked to give it up. */
  tryAcquire(holder = null) {
    if (this.used >= this.slots) return null;
    this.used += 1;
    if (holder) this.holders.add(holder);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.used -= 1;
      if (holder) this.holders.delete(holder);
      const next = this.waiting;
      this.waiting = null;
      next?.();
    };
  }

  /**
   * For a terminal typed into at `now` that has no slot: the holder typed into
   * least recently, if not within `idle` ms, gives its slot up (it polls on a
   * timer instead), and `then()` is called once it is free. False if none will.
   */
  steal(now, then) {
    let victim = null;
    for (const holder of this.holders) {
      if (now - holder.lastInput >= this.idle && (!victim || holder.lastInput < victim.lastInput)) victim = holder;
    }
    if (!victim) return false;
    this.holders.delete(victim);
    this.waiting = then;
    victim.preempt();
    return true;
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

// -- One output stream per page ------------------------------------------------------

/** The most readers one stream carries: the server's default `max_stream_sessions`. */
export const STREAM_MAX_READERS = 32;

/**
 * A streamed answer over `fetch`: resolves `{status, text}` for an answer that is not an
 * event stream (an error, a proxy's page), else `{status, chunks}`, `chunks()` an async
 * iterator of its text as it comes. Rejects on a network failure or an abort.
 */
export function fetchStream(fetchImpl = globalThis.fetch?.bind(globalThis)) {
  return async (url, { headers = {}, signal } = {}) => {
    const response = await fetchImpl(url, { headers, signal, credentials: "same-origin", cache: "no-store" });
    const type = response.headers.get("Content-Type") || "";
    if (response.status !== 200 || !type.startsWith("text/event-stream") || !response.body) {
      return { status: response.status, text: await response.text() };
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    return {
      status: 200,
      async* chunks() {
        try {
          for (;;) {
            const { value, done } = await reader.read();
            if (done) return;
            yield decoder.decode(value, { stream: true });
          }
        } finally {
          reader.cancel().catch(() => {});
        }
      },
    };
  };
}

/**
 * Server-Sent Events from text as it comes: `onEvent(name, data)` for each event,
 * `onEvent("comment", text)` for each comment line. Lines may come cut anywhere.
 */
export class SseParser {
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.buffer = "";
    this.scanned = 0; // no newline in buffer before this
    this.name = "";
    this.data = [];
  }

  feed(text) {
    this.buffer += text;
    let nl = this.buffer.indexOf("\n", this.scanned);
    let start = 0;
    while (nl >= 0) {
      let line = this.buffer.slice(start, nl);
      start = nl + 1;
      if (line.endsWith("\r")) line = line.slice(0, -1);
      this._line(line);
      nl = this.buffer.indexOf("\n", start);
    }
    this.buffer = this.buffer.slice(start);
    this.scanned = this.buffer.length;
  }

  _line(line) {
    if (line === "") {
      if (this.data.length) this.onEvent(this.name || "message", this.data.join("\n"));
      this.name = "";
      this.data = [];
      return;
    }
    if (line.startsWith(":")) {
      this.onEvent("comment", line.slice(1));
      return;
    }
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.name = value;
    else if (field === "data") this.data.push(value);
  }
}

/** Where a page remembers that streams do not get through (sessionStorage), by server. */
export function fallbackKey(baseUrl) {
  return `labkernel:transport:${baseUrl}`;
}

/**
 * The output of all terminals of a page on one Server-Sent Events stream
 * (`GET api/ws/stream`), shared by every SessionTransport of the page.
 *
 * Each terminal subscribes with its session, clientId and offset, and gets its
 * output events in order; it says when it has written each (`written`), and the
 * stream tells the server in acknowledgements, one in flight at a time, whenever a
 * quarter of the window has been written since the last: the server never sends a
 * terminal more than its window past what it acknowledged, so a flood cannot
 * outrun the page. A subscription made or ended reopens the stream with the
 * readers there are then, from the offset each has taken (nothing is lost or
 * repeated: each event carries its offsets). While a stream is replaced, a page
 * may hold up to two windows it has not written.
 *
 * Where the stream does not get through it falls back, and the page's terminals
 * read with long polls: no event within `openTimeout` ms of asking (a proxy that
 * buffers answers), a stream that goes silent twice past its heartbeat, an answer
 * that is not an event stream, a server without the route (404), or one that has
 * as many streams as it allows (429). A fallback is kept for the page, and the
 * first four of those also in `storage` (sessionStorage: the next load of the
 * page does not try again). Network errors and 5xx answers are retried with
 * backoff, as polls are.
 */
export class PageStream {
  constructor({
    api, open = fetchStream(), timers = globalThis, random = Math.random, storage = null,
    openTimeout = 4000, backoff = {}, maxReaders = STREAM_MAX_READERS, now = () => Date.now(),
  }) {
    Object.assign(this, { api, open, timers, random, storage, openTimeout, backoff, maxReaders, now });
    this.subs = new Map(); // clientId -> subscription
    this.conn = null; // the stream being read
    this.fallen = null; // why the page reads with long polls instead, once it does
    this.failures = 0; // failed attempts since the last stream that opened
    this.stalls = 0; // silent streams in a row
    this.reconnectTimer = null;
    this.watchdog = null;
    this.acking = false;
    this.ackTimer = null;
    this.ackFailures = 0;
    this.requests = 0; // streams asked for (for tests and the curious)
    try {
      if (storage?.getItem(fallbackKey(api.baseUrl)) === "polls") this.fallen = "remembered";
    } catch {
      // storage refused: nothing remembered
    }
  }

  /** Whether terminals of this page read their output here (false: long polls). */
  get usable() {
    return !this.fallen;
  }

  /**
   * Read `sessionId` for `clientId` from `offset`. `handlers`: `onOpen()` (the
   * stream is there), `onOutput(event)` (an output event: `offset`, `nextOffset`,
   * `data`, `truncated`), `onEnd(event)` (`status`, `exitCode`), `onError(event)`
   * (`error`, `message`: the session is unknown), `onRefused(answer)` (401/403),
   * `onTrouble(attempt)` (reconnecting), `onFallback()` (read with long polls from
   * now on). Returns `{written(offset), close()}`, or null where the page reads
   * with long polls (or has as many readers as a stream carries).
   */
  subscribe({ sessionId, clientId, offset, ...handlers }) {
    if (this.fallen || this.subs.size >= this.maxReaders || this.subs.has(clientId)) return null;
    const sub = { sessionId, clientId, next: offset, written: offset, acked: offset, ...handlers };
    this.subs.set(clientId, sub);
    this._reconnectSoon(0);
    return {
      written: (at) => {
        if (this.subs.get(clientId) !== sub || at <= sub.written) return;
        sub.written = at;
        this._maybeAck();
      },
      close: () => {
        if (this.subs.get(clientId) !== sub) return;
        this.subs.delete(clientId);
        this._reconnectSoon(0);
      },
    };
  }

  // -- the connection ----------------------------------------------------------------

  _reconnectSoon(delay) {
    if (this.fallen) return;
    if (this.reconnectTimer !== null) this.timers.clearTimeout(this.reconnectTimer);
    this.reconnectTimer = this.timers.setTimeout(() => {
      this.reconnectTimer = null;
      this._connect();
    }, delay);
  }

  _drop() {
    const conn = this.conn;
    this.conn = null;
    if (this.watchdog !== null) this.timers.clearTimeout(this.watchdog);
    this.watchdog = null;
    if (conn) {
      this.timers.clearTimeout(conn.openTimer);
      conn.controller.abort();
    }
  }

  async _connect() {
    this._drop();
    if (this.fallen || !this.subs.size) return;
    const conn = {
      controller: new AbortController(), opened: false, closed: false, id: null, window: 0,
      heartbeat: 15, since: this.now(), subs: new Set(this.subs.values()),
    };
    this.conn = conn;
    this.requests += 1;
    for (const sub of conn.subs) sub.acked = sub.next; // the new stream counts from there
    const reads = [...conn.subs].map((s) => `read=${encodeURIComponent(`${s.sessionId}:${s.next}:${s.clientId}`)}`);
    // The XSRF header too: JupyterHub's single-user servers refuse a script's
    // cookie-authenticated GET without it (see Api.authHeaders).
    const headers = { Accept: "text/event-stream", ...(this.api.authHeaders ? this.api.authHeaders() : {}) };
    conn.openTimer = this.timers.setTimeout(() => {
      if (this.conn === conn && !conn.opened) this._fallBack("no event came", true);
    }, this.openTimeout);
    const parser = new SseParser((name, data) => this._event(conn, name, data));
    try {
      const answer = await this.open(this.api.url(`api/ws/stream?${reads.join("&")}`), {
        headers, signal: conn.controller.signal,
      });
      if (this.conn !== conn) return;
      if (!answer.chunks) {
        this._refused(answer);
        return;
      }
      for await (const text of answer.chunks()) {
        if (this.conn !== conn) return;
        conn.lastByte = this.now();
        parser.feed(text);
      }
    } catch {
      // a network failure, or our own abort (then this.conn is no longer conn)
    }
    if (this.conn !== conn) return;
    this._ended(conn);
  }

  _ended(conn) {
    this._drop();
    if (conn.closed && conn.opened) {
      this.failures = 0;
      this._reconnectSoon(0); // the server ended it (lifetime): the next one at once
      return;
    }
    if (conn.opened && this.now() - conn.since >= 10000) this.failures = 0; // a long life, then cut
    this._trouble();
  }

  _trouble() {
    this.failures += 1;
    for (const sub of this.subs.values()) sub.onTrouble?.(this.failures);
    this._reconnectSoon(backoffDelay(this.failures, { ...this.backoff, random: this.random }));
  }

  _refused(answer) {
    let body = null;
    try {
      body = answer.text ? JSON.parse(answer.text) : null;
    } catch {
      body = null;
    }
    const { status } = answer;
    if (status === 401 || status === 403) {
      this._drop();
      const subs = [...this.subs.values()];
      this.subs.clear();
      for (const sub of subs) sub.onRefused?.({ status, body });
      return;
    }
    if (status === 200 || status === 400 || (status === 404 && body?.error === "not_found")) {
      this._fallBack(`the server answered ${status} ${body?.error || "(not an event stream)"}`, true);
      return;
    }
    if (status === 429) {
      this._fallBack("the server has as many streams as it allows", false);
      return;
    }
    this._drop();
    this._trouble(); // 5xx, a proxy restarting: again, later
  }

  _fallBack(reason, remember) {
    if (this.fallen) return;
    this._drop();
    this.fallen = reason;
    if (this.reconnectTimer !== null) this.timers.clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    if (remember) {
      try {
        this.storage?.setItem(fallbackKey(this.api.baseUrl), "polls");
      } catch {
        // storage refused: the page still remembers
      }
    }
    const subs = [...this.subs.values()];
    this.subs.clear();
    for (const sub of subs) sub.onFallback?.();
  }

  _watch(conn, delay = conn.heartbeat * 1500 + 5000) {
    if (this.watchdog !== null) this.timers.clearTimeout(this.watchdog);
    const limit = conn.heartbeat * 1500 + 5000; // a heartbeat and a half, and some slack
    this.watchdog = this.timers.setTimeout(() => {
      this.watchdog = null;
      if (this.conn !== conn) return;
      const quiet = this.now() - conn.lastByte;
      if (quiet < limit) {
        this._watch(conn, limit - quiet);
        return;
      }
      // Silent past its heartbeat: a proxy holds the stream back, or the network is gone.
      this.stalls += 1;
      if (this.stalls >= 2) this._fallBack("the stream went silent", true);
      else {
        this._drop();
        this._trouble();
      }
    }, delay);
  }

  _event(conn, name, raw) {
    if (this.conn !== conn) return;
    if (name === "comment") {
      if (conn.opened) this.stalls = 0;
      return;
    }
    let data;
    try {
      data = JSON.parse(raw);
    } catch {
      return;
    }
    if (name === "open") {
      conn.opened = true;
      conn.id = data.streamId;
      conn.window = data.window;
      conn.heartbeat = data.heartbeat;
      this.timers.clearTimeout(conn.openTimer);
      this.failures = 0;
      this._watch(conn);
      for (const sub of conn.subs) if (this.subs.get(sub.clientId) === sub) sub.onOpen?.();
      return;
    }
    if (name === "close") {
      conn.closed = true;
      return;
    }
    this.stalls = 0;
    const sub = this.subs.get(data.clientId);
    if (!sub || !conn.subs.has(sub)) return;
    if (name === "output") {
      if (data.offset < sub.next) return; // never: each event follows the last
      sub.next = data.nextOffset;
      sub.onOutput?.(data);
    } else if (name === "end" || name === "error") {
      this.subs.delete(sub.clientId);
      if (name === "end") sub.onEnd?.(data);
      else sub.onError?.(data);
    }
  }

  // -- acknowledgements ------------------------------------------------------------

  _maybeAck() {
    const conn = this.conn;
    if (!conn?.opened || this.acking || this.ackTimer !== null) return;
    const step = Math.max(1, Math.floor(conn.window / 4));
    const due = [...conn.subs].some((s) => this.subs.get(s.clientId) === s && s.written - s.acked >= step);
    if (due) this._ack(conn);
  }

  async _ack(conn) {
    const written = {};
    const sent = [];
    for (const sub of conn.subs) {
      if (this.subs.get(sub.clientId) === sub && sub.written > sub.acked) {
        written[sub.clientId] = sub.written;
        sent.push([sub, sub.written]);
      }
    }
    if (!sent.length) return;
    this.acking = true;
    let answer = null;
    try {
      answer = await this.api.request("POST", `api/ws/stream/${encodeURIComponent(conn.id)}/ack`, {
        body: { written }, timeout: 30000,
      });
    } catch {
      answer = null;
    }
    this.acking = false;
    if (this.conn !== conn) return; // that stream is gone; the next counts from its own start
    if (answer && answer.status === 200) {
      this.ackFailures = 0;
      for (const [sub, at] of sent) sub.acked = Math.max(sub.acked, at);
      this._maybeAck();
      return;
    }
    if (answer && answer.status < 500 && answer.status !== 429) return; // closed meanwhile (404), or refused
    // No answer, or a proxy's 5xx: try again; the stream may be waiting for this.
    this.ackFailures += 1;
    this.ackTimer = this.timers.setTimeout(() => {
      this.ackTimer = null;
      if (this.conn === conn) this._ack(conn);
    }, backoffDelay(this.ackFailures, { ...this.backoff, random: this.random }));
  }
}

/** The stream shared by every terminal of this page on this server (widgets load the module more than once). */
export function pageStream(api) {
  const key = "__labkernelStreams";
  globalThis[key] ??= new Map();
  const streams = globalThis[key];
  if (!streams.has(api.baseUrl)) {
    let storage = null;
    try {
      storage = globalThis.sessionStorage ?? null;
    } catch {
      storage = null; // refused (sandboxed frames)
    }
    streams.set(api.baseUrl, new PageStream({ api, storage }));
  }
  return streams.get(api.baseUrl);
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
 * Live output comes on the page's stream (`stream`, a PageStream) when it has
 * one that gets through: each event is handed to `onOutput` as it arrives (xterm
 * queues writes in order) and `done()` tells the stream it is written (its flow
 * control). History, and everything where the page fell back, is long-polled.
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
    timers = globalThis, random = Math.random, budget = new PollBudget(Infinity), stream = null,
    shortInterval = 1000, activeInterval = 150, backoff = {}, now = () => Date.now(),
  }) {
    Object.assign(this, {
      api, sessionId, clientId, offset, wait, liveFrom, onOutput, onState, timers, random, budget,
      stream, shortInterval, activeInterval, backoff, now,
    });
    this.subscription = null; // on the page's stream
    const transport = this;
    this.holder = { // of a long-poll slot (PollBudget.steal)
      get lastInput() { return transport.lastInput; },
      preempt: () => {
        this.preempted = true;
        this.pollAbort?.abort();
      },
    };
    this.preempted = false;
    this.drawing = 0; // streamed output handed to onOutput and not yet drawn
    this.afterDrawn = null; // what waits for the drawing to end (an end state, long polls)
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
    const replay = this.offset < this.liveFrom;
    if (!replay && this.stream?.usable && this._subscribe()) return;
    this.reading = true;
    const confirming = !this.confirmed;
    // The first answer after (re)connecting comes at once, so the status line turns
    // "connected" without waiting for output; after that, long polls when a slot is
    // free. History is there already: no long poll, no slot for it.
    this.release = this.confirmed && !replay ? this.budget.tryAcquire(this.holder) : null;
    const wait = this.release ? this.wait : 0;
    this.preempted = false;
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
    if (!answer && this.preempted) {
      // Its slot went to a terminal being typed into: poll on a timer meanwhile.
      this.preempted = false;
      this.reading = false;
      this._schedulePoll(this.shortInterval);
      return;
    }
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

  /** Read live output on the page's stream; false where it takes no more readers. */
  _subscribe() {
    const subscription = this.stream.subscribe({
      sessionId: this.sessionId,
      clientId: this.clientId,
      offset: this.offset,
      onOpen: () => {
        this.readFailures = 0;
        this.confirmed = true;
        if (this.writeFailures === 0) this._setState("connected");
      },
      onTrouble: (attempt) => {
        this.confirmed = false;
        this.readFailures = attempt;
        this._setState("reconnecting", { attempt: Math.max(attempt, this.writeFailures) });
      },
      onOutput: (event) => this._streamed(event),
      onEnd: ({ status, exitCode }) => {
        this.subscription = null;
        this._whenDrawn(() => {
          if (status === "expired") this._setState("expired");
          else this._setState("ended", { exitCode: exitCode ?? null, status });
        });
      },
      onError: ({ message }) => {
        this.subscription = null;
        this._setState("not_found", { message: message || "" });
      },
      onRefused: (answer) => {
        this.subscription = null;
        this._finalAnswer(answer);
      },
      onFallback: () => {
        // Long polls from where the stream stopped, once what it gave is drawn.
        this.subscription = null;
        this._whenDrawn(() => {
          this.reading = false;
          this._poll();
        });
      },
    });
    if (!subscription) return false;
    this.subscription = subscription;
    this.reading = true; // the stream reads for this transport
    return true;
  }

  _streamed({ data, offset, nextOffset }) {
    if (this.disposed || this.final) return;
    const gap = offset > this.offset ? offset - this.offset : 0;
    this.offset = nextOffset;
    if (!data && !gap) return;
    const text = gap ? `\r\n\x1b[2m[${gap} bytes of output were dropped]\x1b[0m\r\n${data}` : data;
    const subscription = this.subscription;
    this.drawing += 1;
    let called = false;
    this.onOutput(text, () => {
      if (called) return;
      called = true;
      subscription?.written(nextOffset);
      this.drawing -= 1;
      if (this.drawing === 0 && this.afterDrawn) {
        const then = this.afterDrawn;
        this.afterDrawn = null;
        then();
      }
    }, { replay: false });
  }

  /** Run `then` once the streamed output handed out so far is drawn. */
  _whenDrawn(then) {
    if (this.drawing === 0) then();
    else this.afterDrawn = then;
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

  /** Typed into with no long-poll slot: take one from a terminal that is not (PollBudget.steal). */
  _claimSlot() {
    if (this.subscription || this.pollTimer === null || this.readFailures) return;
    this.budget.steal?.(this.now(), () => this._kick());
  }

  // -- input ---------------------------------------------------------------------

  /** Queue keystrokes (any length: long pastes go out in pieces, in order). */
  send(data) {
    if (!data || this.disposed || this.final) return;
    const last = this.queue[this.queue.length - 1];
    if (last?.kind === "data") last.data += data;
    else this.queue.push({ kind: "data", data });
    this._flush();
    this._claimSlot();
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
    this.subscription?.close();
    this.subscription = null;
    this.afterDrawn = null;
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
