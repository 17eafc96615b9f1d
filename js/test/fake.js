// A fake labkernel server and fake timers for the transport's unit tests.
//
// The server is a model of the REST contract's two hot routes (output by offset
// with long polls, input with seq/clientId de-duplication), small enough to read
// at a glance. The real server is tested against the same contract in
// tests/ (Python, a real Jupyter server); browser tests drive the two together.

/** A small seeded PRNG (mulberry32), so a failing run can be replayed by its seed. */
export function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export const tick = () => new Promise((resolve) => setImmediate(resolve));

/** Let every pending promise chain run (a few event-loop turns). */
export async function settle(turns = 10) {
  for (let i = 0; i < turns; i += 1) await tick();
}

/** setTimeout/clearTimeout on a manual clock. */
export class FakeTimers {
  constructor() {
    this.time = 0;
    this.nextId = 1;
    this.pending = new Map(); // id -> {at, fn, delay}
    this.scheduled = []; // every delay ever asked for, in order
  }

  setTimeout = (fn, delay = 0) => {
    const id = this.nextId++;
    this.pending.set(id, { at: this.time + delay, fn, delay });
    this.scheduled.push(delay);
    return id;
  };

  clearTimeout = (id) => {
    this.pending.delete(id);
  };

  now = () => this.time;

  /** Advance the clock by `ms`, running each timer that falls due (and what it causes). */
  async advance(ms) {
    const end = this.time + ms;
    for (;;) {
      await settle();
      let next = null;
      for (const [id, t] of this.pending) {
        if (t.at <= end && (next === null || t.at < next[1].at)) next = [id, t];
      }
      if (!next) break;
      this.pending.delete(next[0]);
      this.time = next[1].at;
      next[1].fn();
    }
    this.time = end;
    await settle();
  }
}

function abortError() {
  const e = new Error("aborted");
  e.name = "AbortError";
  return e;
}

/** One session's server side, reached through `server.http` (an HTTP layer). */
export class FakeServer {
  constructor({ max = Infinity } = {}) {
    this.output = "";
    this.status = "running";
    this.exitCode = null;
    this.max = max; // the most characters per output answer
    this.start = 0; // the oldest character still kept (older offsets answer from here)
    this.written = ""; // input as the PTY got it
    this.messages = []; // every accepted (non-duplicate) message body
    this.lastSeq = new Map(); // clientId -> highest accepted seq
    this.requests = []; // {method, url, body, headers, signal}
    this.faults = []; // what the next requests suffer, in order
    this.waiters = new Set();
    this.inflightPosts = 0;
    this.maxInflightPosts = 0;
    this.holdPosts = false; // answer POSTs only when released
    this.heldPosts = [];
  }

  /** The next request fails: "network" (no answer), "lost" (done, answer lost), or an HTTP status. */
  fault(...kinds) {
    this.faults.push(...kinds);
  }

  append(text) {
    this.output += text;
    this._wake();
  }

  end(status = "exited", exitCode = 0) {
    this.status = status;
    this.exitCode = exitCode;
    this._wake();
  }

  /** A proxy cuts every waiting long poll: each fails as a network error. */
  dropWaiting() {
    for (const wake of this.waiters) wake(new Error("connection cut"));
    this.waiters.clear();
  }

  releasePosts() {
    const held = this.heldPosts;
    this.heldPosts = [];
    for (const release of held) release();
  }

  get polls() {
    return this.requests.filter((r) => r.method === "GET" && r.url.includes("api/ws/output/"));
  }

  get statusRequests() {
    return this.requests.filter((r) => r.method === "GET" && r.url.includes("api/ws/status/"));
  }

  get posts() {
    return this.requests.filter((r) => r.method === "POST");
  }

  _wake() {
    for (const wake of this.waiters) wake(null);
    this.waiters.clear();
    this.onChange?.();
  }

  http = async (method, url, { headers = {}, body = null, signal } = {}) => {
    const request = { method, url, headers, body: body && JSON.parse(body), signal };
    this.requests.push(request);
    const fault = this.faults.shift();
    if (fault === "network") {
      await Promise.resolve();
      throw new Error("network error");
    }
    if (typeof fault === "number") {
      return { status: fault, text: JSON.stringify({ error: fault === 404 ? "session_not_found" : "x", message: `status ${fault}` }) };
    }
    let answer;
    if (method === "GET" && url.includes("api/ws/output/")) answer = await this._output(url, signal);
    else if (method === "POST" && url.endsWith("api/ws/message")) answer = await this._message(request.body);
    else if (method === "GET" && url.includes("api/ws/status/")) {
      answer = this._status();
      this.afterStatus?.(); // output that comes right after the client attached
    }
    else if (url.endsWith("health")) answer = { status: 200, text: JSON.stringify({ transport: "http-polling" }) };
    else answer = { status: 404, text: JSON.stringify({ error: "not_found", message: "no route" }) };
    if (fault === "lost") throw new Error("connection reset after the server acted");
    return answer;
  };

  async _output(url, signal) {
    const query = new URL(url, "http://x").searchParams;
    const offset = Number(query.get("offset"));
    const wait = Number(query.get("wait"));
    if (offset >= this.output.length && wait > 0 && this.status === "running") {
      await new Promise((resolve, reject) => {
        if (signal?.aborted) reject(abortError());
        const wake = (error) => (error ? reject(error) : resolve());
        this.waiters.add(wake);
        signal?.addEventListener("abort", () => {
          this.waiters.delete(wake);
          reject(abortError());
        }, { once: true });
      });
    }
    const start = Math.max(this.start, Math.min(offset, this.output.length));
    const max = Math.min(this.max, Number(query.get("max") || Infinity));
    const data = this.output.slice(start, start + max);
    return {
      status: 200,
      text: JSON.stringify({
        sessionId: "s1", data, offset: start, nextOffset: start + data.length, truncated: start > offset,
        status: this.status, exitCode: this.exitCode,
      }),
    };
  }

  _status() {
    return {
      status: 200,
      text: JSON.stringify({
        sessionId: "s1", connected: true, terminalActive: this.status === "running", status: this.status,
        exitCode: this.exitCode, outputOffset: this.output.length, lastActivity: "2026-01-01T00:00:00Z",
      }),
    };
  }

  async _message(body) {
    this.inflightPosts += 1;
    this.maxInflightPosts = Math.max(this.maxInflightPosts, this.inflightPosts);
    try {
      if (this.holdPosts) await new Promise((resolve) => this.heldPosts.push(resolve));
      if (this.status !== "running") {
        return { status: 409, text: JSON.stringify({ error: "session_ended", message: "ended" }) };
      }
      const client = body.clientId ?? "";
      if (body.seq !== undefined && body.seq <= (this.lastSeq.get(client) ?? -1)) {
        return { status: 200, text: JSON.stringify({ accepted: true, offset: this.output.length, duplicate: true }) };
      }
      if (body.seq !== undefined) this.lastSeq.set(client, body.seq);
      this.messages.push(body);
      if (body.data !== undefined) this.written += body.data;
      return { status: 200, text: JSON.stringify({ accepted: true, offset: this.output.length, duplicate: false }) };
    } finally {
      this.inflightPosts -= 1;
    }
  }
}

/**
 * Several sessions (FakeServers, by id) behind one server, with its output stream
 * (`GET api/ws/stream`, Server-Sent Events) and the stream's acknowledgements: `http`
 * is the page's HTTP layer, `stream` its streamed-answer layer (see `fetchStream`).
 *
 * The stream holds to the contract: each reader's events follow on from its offset,
 * never more than `window` characters past what was acknowledged; `maxUnwritten`
 * records the most a reader ever had sent and not acknowledged.
 */
export class FakeHub {
  constructor({ sessions = ["s1"], window = 1000, heartbeat = 15, max = Infinity } = {}) {
    this.sessions = new Map(sessions.map((id) => [id, new FakeServer({ max })]));
    for (const server of this.sessions.values()) server.onChange = () => this._pumpAll();
    this.window = window;
    this.heartbeat = heartbeat;
    this.requests = []; // every request of the HTTP layer: {method, url, body}
    this.streamRequests = []; // every stream asked for: {url, reads}
    this.streamFaults = []; // what the next streams suffer: "network", "buffer", "html", or an HTTP status
    this.open = new Map(); // streamId -> connection
    this.acks = []; // every acknowledgement body
    this.maxUnwritten = 0;
    this.nextId = 1;
  }

  session(id = "s1") {
    return this.sessions.get(id);
  }

  get polls() {
    return this.requests.filter((r) => r.method === "GET" && r.url.includes("api/ws/output/"));
  }

  /** The server ends every open stream with a close event (its lifetime). */
  closeStreams() {
    for (const conn of this.open.values()) this._finish(conn, "lifetime");
  }

  /** Every open stream is cut, as by a proxy or a network failure: no close event. */
  cutStreams() {
    for (const conn of [...this.open.values()]) {
      this.open.delete(conn.id);
      conn.fail(new Error("connection cut"));
    }
  }

  /** A comment line on every open stream. */
  heartbeatAll() {
    for (const conn of this.open.values()) conn.push(": keep-alive\n\n");
  }

  http = async (method, url, options = {}) => {
    const body = options.body && JSON.parse(options.body);
    this.requests.push({ method, url, body });
    const ack = /api\/ws\/stream\/([^/]+)\/ack$/.exec(url);
    if (ack && method === "POST") return this._ack(decodeURIComponent(ack[1]), body);
    const path = /api\/ws\/(?:output|status)\/([^/?]+)/.exec(url);
    const id = path ? decodeURIComponent(path[1]) : body?.sessionId;
    const server = this.sessions.get(id) ?? (url.endsWith("health") ? this.session() : null);
    if (!server) return { status: 404, text: JSON.stringify({ error: "session_not_found", message: "no such session" }) };
    return server.http(method, url, options);
  };

  stream = async (url, { signal } = {}) => {
    const query = new URL(url, "http://x").searchParams;
    const reads = query.getAll("read").map((r) => {
      const [sessionId, offset, ...rest] = r.split(":");
      return { sessionId, offset: Number(offset), clientId: rest.join(":") };
    });
    this.streamRequests.push({ url, reads });
    const fault = this.streamFaults.shift();
    await Promise.resolve();
    if (fault === "network") throw new Error("network error");
    if (typeof fault === "number") {
      const error = { 404: "not_found", 429: "too_many_streams", 403: "forbidden" }[fault] || "server_error";
      return { status: fault, text: JSON.stringify({ error, message: `status ${fault}` }) };
    }
    if (fault === "html") return { status: 200, text: "<html>a proxy's page</html>" };
    const conn = this._connection(reads, signal, fault === "buffer");
    return { status: 200, chunks: () => conn.chunks() };
  };

  _connection(reads, signal, buffer) {
    const id = `stream-${this.nextId++}`;
    const queue = [];
    let wake = null;
    let failure = null;
    let done = false;
    const conn = {
      id,
      readers: new Map(),
      push: (text) => {
        if (buffer) return; // a proxy that holds the answer back: nothing ever arrives
        queue.push(text);
        wake?.();
      },
      end: () => {
        done = true;
        wake?.();
      },
      fail: (error) => {
        failure = error;
        wake?.();
      },
      async* chunks() {
        for (;;) {
          if (queue.length) {
            yield queue.shift();
            continue;
          }
          if (failure) throw failure;
          if (done) return;
          await new Promise((resolve) => { wake = resolve; });
          wake = null;
        }
      },
    };
    signal?.addEventListener("abort", () => {
      this.open.delete(id);
      conn.fail(abortError());
    }, { once: true });
    this.open.set(id, conn);
    conn.push(`event: open\ndata: ${JSON.stringify({ streamId: id, window: this.window, heartbeat: this.heartbeat, lifetime: 600 })}\n\n`);
    for (const read of reads) {
      if (!this.sessions.has(read.sessionId)) {
        conn.push(event("error", { sessionId: read.sessionId, clientId: read.clientId, error: "session_not_found", message: "gone" }));
        continue;
      }
      conn.readers.set(read.clientId, { ...read, sent: read.offset, written: read.offset });
    }
    this._pump(conn);
    return conn;
  }

  _pumpAll() {
    for (const conn of this.open.values()) this._pump(conn);
  }

  _pump(conn) {
    for (const [clientId, reader] of conn.readers) {
      const server = this.sessions.get(reader.sessionId);
      for (;;) {
        const start = Math.max(reader.sent, server.start);
        const room = reader.written + this.window - reader.sent;
        if (start >= server.output.length || room <= 0) break;
        const data = server.output.slice(start, start + Math.min(room, server.max));
        const truncated = start > reader.sent;
        if (truncated) reader.written += start - reader.sent;
        reader.sent = start + data.length;
        this.maxUnwritten = Math.max(this.maxUnwritten, reader.sent - reader.written);
        conn.push(event("output", { sessionId: reader.sessionId, clientId, offset: start, nextOffset: reader.sent, data, truncated }));
      }
      if (server.status !== "running" && reader.sent >= server.output.length) {
        conn.readers.delete(clientId);
        conn.push(event("end", { sessionId: reader.sessionId, clientId, nextOffset: reader.sent, status: server.status, exitCode: server.exitCode }));
      }
    }
    if (!conn.readers.size) this._finish(conn, "ended");
  }

  _finish(conn, reason) {
    if (!this.open.has(conn.id)) return;
    this.open.delete(conn.id);
    conn.push(event("close", { reason }));
    conn.end();
  }

  _ack(streamId, body) {
    this.acks.push(body);
    const conn = this.open.get(streamId);
    if (!conn) return { status: 404, text: JSON.stringify({ error: "stream_not_found", message: "closed" }) };
    for (const [clientId, offset] of Object.entries(body?.written ?? {})) {
      const reader = conn.readers.get(clientId);
      if (!reader) continue;
      if (offset > reader.sent) return { status: 400, text: JSON.stringify({ error: "bad_request", message: "never sent" }) };
      reader.written = Math.max(reader.written, offset);
    }
    this._pump(conn);
    return { status: 200, text: JSON.stringify({ streamId, accepted: true }) };
  }
}

function event(name, data) {
  return `event: ${name}\ndata: ${JSON.stringify(data)}\n\n`;
}
