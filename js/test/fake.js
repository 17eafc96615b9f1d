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
