// The browser benchmark's instruments, installed in the page before any of its code
// runs (Playwright's add_init_script). See benchmarks/README.md, "Browser benchmark".
//
// What it times, all with performance.now() in the page:
//
// - keydown: a capture-phase listener on window, the first listener of the page.
// - arrival: output of a terminal as it reaches the page's JavaScript, before any
//   handler of the page sees it. XMLHttpRequest, fetch, EventSource and WebSocket are
//   wrapped so that this file's listener runs before the page's own, and an answer is
//   timestamped at the first event that makes its bytes readable: XHR
//   readystatechange/progress (listeners added in the constructor), the first chunk of
//   a fetch body (the page reads the body through a stream of this file's, which
//   times each chunk before passing it on), an EventSource event, a WebSocket message.
//   Whatever the labkernel transport (long polls, a stream over XHR or fetch,
//   EventSource), the same point is taken as for JupyterLab's WebSocket messages.
// - paint: the next animation frame after xterm drew the character. labkernel's
//   terminals (xterm's DOM renderer): a MutationObserver on the terminal's screen;
//   JupyterLab's (canvas renderer): xterm's onRender. Both fire inside xterm's
//   requestAnimationFrame callback, so the frame being rendered shows the character;
//   the time taken is the next frame's requestAnimationFrame callback (about when the
//   frame is on screen). Also kept: when xterm drew it, and when the rendering steps of
//   that frame were over (a message posted from the frame). A character shown by
//   predictive local echo counts as painted: it is what the learner sees.
//
// Which requests are labkernel's: the paths of its API under any base URL
// (`/api/labs/…`, `/api/ws/…`, `/health`, and anything under `/labkernel/`). Output is
// found in their answers without knowing the route: JSON (whole answers, SSE `data:`
// payloads, or NDJSON lines) is walked for string fields named `data` or `output`
// (base64-decoded where the object says `encoding: "base64"`), attributed to the
// nearest `sessionId` (else to the session id in the URL, else to no session in
// particular); a `data:` payload that is not JSON is output as it is.
(() => {
  if (window.__lkb) return;
  const now = () => performance.now();
  const MARK = "flood-" + "42";
  const BIG = 65536; // longer pieces are only searched for MARK (decoding them costs the page)
  const B = window.__lkb = {
    keydown: 0,
    keydowns: 0,
    longtasks: [],
    expects: new Map(), // id -> expectation
    nextId: 1,
    arrivals: 0,
    bytes: { lk: 0, jl: 0 },
    errors: [],
  };

  // -- keydown -----------------------------------------------------------------------
  window.addEventListener("keydown", (e) => {
    const t = now();
    B.keydown = t;
    B.keydowns += 1;
    for (const x of B.expects.values()) {
      if (x.t0 === null) {
        x.t0 = t;
        x.stamp = e.timeStamp;
      }
    }
  }, true);

  try {
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) B.longtasks.push([e.startTime, e.duration]);
      if (B.longtasks.length > 5000) B.longtasks.splice(0, 2500);
    }).observe({ type: "longtask", buffered: true });
  } catch (e) {
    B.errors.push("longtask: " + e);
  }

  // -- the end of the current frame ----------------------------------------------------
  // Every requestAnimationFrame callback goes through here: the first of a frame posts
  // a message, which runs after the frame's rendering steps.
  const raf0 = window.requestAnimationFrame.bind(window);
  const channel = new MessageChannel();
  let inFrame = false;
  let afterFrame = [];
  channel.port1.onmessage = () => {
    inFrame = false;
    const t = now();
    const queue = afterFrame;
    afterFrame = [];
    for (const f of queue) f(t);
  };
  window.requestAnimationFrame = function (callback) {
    return raf0((ts) => {
      // Only while something is awaited: an idle page gets no extra task per frame.
      if (!inFrame && (B.expects.size || afterFrame.length)) {
        inFrame = true;
        channel.port2.postMessage(0);
      }
      callback(ts);
    });
  };
  /**
   * `f(frameEnd, next)` for what was just drawn: `frameEnd`, when the rendering steps of
   * the frame that shows it are over (a message posted from that frame), and `next`, the
   * next frame's requestAnimationFrame callback (about when the frame is on screen).
   * Drawn outside a frame, it shows in the next one, and so on.
   */
  function afterPaint(f) {
    if (!inFrame) {
      window.requestAnimationFrame(() => afterPaint(f));
      return;
    }
    afterFrame.push((frameEnd) => raf0(() => f(frameEnd, now())));
  }
  B.afterPaint = afterPaint;

  // -- which requests are labkernel's ---------------------------------------------------
  const LK_PATH = /\/(?:api\/(?:labs|ws)(?:[/?]|$)|health(?:[/?]|$)|labkernel\/)/;
  const SID_IN_URL = /\/(?:output|status|session)\/([^/?#]+)/;
  function lkInfo(url) {
    let path;
    try {
      path = new URL(String(url), location.href).pathname;
    } catch (e) {
      return null;
    }
    if (!LK_PATH.test(path)) return null;
    const m = SID_IN_URL.exec(path);
    return { kind: "lk", sid: m ? decodeURIComponent(m[1]) : null };
  }
  function jlInfo(url) {
    const m = /\/terminals\/websocket\/([^/?#]+)/.exec(String(url));
    return m ? { kind: "jl", sid: decodeURIComponent(m[1]) } : null;
  }

  // -- decoding output --------------------------------------------------------------
  function walk(v, sid, out) {
    if (Array.isArray(v) && v[0] === "stdout" && typeof v[1] === "string") {
      out.push({ sid, data: v[1] }); // terminado's ["stdout", data]
      return;
    }
    if (Array.isArray(v)) {
      for (const x of v) walk(x, sid, out);
      return;
    }
    if (!v || typeof v !== "object") return;
    const s = v.sessionId ?? v.session_id ?? v.session ?? sid;
    for (const key of ["data", "output"]) {
      let d = v[key];
      if (typeof d !== "string") continue;
      if (v.encoding === "base64") {
        try {
          d = atob(d);
        } catch (e) {
          // not base64 after all
        }
      }
      out.push({ sid: typeof s === "string" ? s : sid, data: d });
    }
    for (const x of Object.values(v)) if (x && typeof x === "object") walk(x, s, out);
  }
  function decodeJson(text, sid, out, rawIfNotJson) {
    try {
      walk(JSON.parse(text), sid, out);
    } catch (e) {
      if (rawIfNotJson) out.push({ sid, data: text });
    }
  }

  /** Whether `text`, a piece of an answer for session `sid` (null: any), may hold echo `e`. */
  function couldHold(e, sid, text) {
    if (sid !== null && e.sid !== null && sid !== e.sid) return false; // another session's answer
    if (sid === null && e.sid !== null && !text.includes(e.sid)) return false; // a shared stream, not naming it
    return text.includes(e.text);
  }

  // One reader of one answer or stream: `feed(text, t)` with each new piece.
  class Reader {
    constructor(info, contentType) {
      this.info = info;
      this.type = (contentType || "").toLowerCase();
      this.sse = this.type.includes("event-stream");
      this.lines = this.type.includes("ndjson") || this.type.includes("jsonl") || this.type.includes("json-seq");
      this.buf = "";
      this.tail = "";
      this.first = null;
    }

    /** Streams are decoded piece by piece; anything else whole, at its end, timed at its first byte. */
    feed(text, t, last = false) {
      if (this.first === null) this.first = t;
      const { kind, sid } = this.info;
      B.arrivals += 1;
      B.bytes[kind] += text.length;
      // The mark, also where it straddles two pieces (the tail is too short to hold a whole one).
      const joined = this.tail + text;
      if (joined.includes(MARK)) mark(kind, sid, t);
      this.tail = joined.slice(-(MARK.length - 1));
      if (this.sse || this.lines) {
        this.buf += text;
        const sep = this.sse ? /\r?\n\r?\n/ : /\r?\n/;
        const parts = this.buf.split(sep);
        this.buf = parts.pop();
        if (last && this.buf) parts.push(this.buf);
        for (const part of parts) this.frame(part, t);
      } else {
        this.buf += text;
        if (last) {
          const whole = this.buf;
          this.buf = "";
          this.decode(whole, this.first, (out) => decodeJson(whole, sid, out, kind === "jl"));
        }
      }
    }

    frame(part, t) {
      const { sid } = this.info;
      if (this.sse) {
        const data = part.split(/\r?\n/).filter((l) => l.startsWith("data:"))
          .map((l) => l.slice(l.startsWith("data: ") ? 6 : 5)).join("\n");
        if (data) this.decode(data, t, (out) => decodeJson(data, sid, out, true));
      } else if (part.trim()) {
        this.decode(part, t, (out) => decodeJson(part, sid, out, false));
      }
    }

    /** Decode at once if small; a big piece later, and only if a pending echo may be in it. */
    decode(text, t, fill) {
      if (text.length <= BIG) {
        const out = [];
        fill(out);
        for (const o of out) output(this.info.kind, o.sid, o.data, t);
        return;
      }
      // (The flood's mark is found without decoding: see mark().)
      const wanted = [...B.expects.values()].some((x) => x.echo && x.echo.at === null
        && x.echo.text !== MARK && x.echo.kind === this.info.kind && couldHold(x.echo, this.info.sid, text));
      if (!wanted) return;
      setTimeout(() => {
        const out = [];
        fill(out);
        for (const o of out) output(this.info.kind, o.sid, o.data, t);
      }, 0);
    }
  }
  B.Reader = Reader;

  // -- expectations: an echo (arrival) and a paint to wait for ------------------------
  function sidMatches(want, got) {
    return got === null || got === undefined || want === null || want === got;
  }

  function output(kind, sid, data, t) {
    for (const x of B.expects.values()) {
      const e = x.echo;
      if (!e || e.at !== null || x.t0 === null || t < x.t0 || e.kind !== kind) continue;
      if (!sidMatches(e.sid, sid) || !data.includes(e.text)) continue;
      e.at = t;
      settle(x);
    }
  }

  function mark(kind, sid, t) {
    for (const x of B.expects.values()) {
      const e = x.echo;
      if (!e || e.at !== null || e.text !== MARK || x.t0 === null || t < x.t0) continue;
      if (e.kind === kind && sidMatches(e.sid, sid)) {
        e.at = t;
        settle(x);
      }
    }
  }

  function settle(x) {
    if ((!x.echo || x.echo.at !== null) && (!x.paint || x.paint.at !== null)) {
      clearTimeout(x.timer);
      B.expects.delete(x.id);
      x.resolve(result(x));
    }
  }

  function result(x) {
    const rel = (at) => (at === null || x.t0 === null ? null : at - x.t0);
    return {
      t0: x.t0, stamp: x.stamp,
      echo: x.echo ? rel(x.echo.at) : undefined,
      paint: x.paint ? rel(x.paint.at) : undefined,
      drawn: x.paint && x.paint.drawn !== undefined ? rel(x.paint.drawn) : undefined,
      frameEnd: x.paint && x.paint.frameEnd !== undefined ? rel(x.paint.frameEnd) : undefined,
      inFrame: x.paint ? x.paint.inFrame : undefined,
      timedOut: !!x.timedOut,
    };
  }

  // -- screens ----------------------------------------------------------------------
  // A target is {kind: "lk", sid} (the .labkernel-terminal showing that session) or
  // {kind: "jl", sid: name} (JupyterLab's terminal `name`, window.__jl[name], set up by
  // the benchmark).
  const screens = new Map(); // key -> {text(), watchers: Set}

  function lkRoot(sid) {
    return document.querySelector(`.labkernel-terminal[data-session-id="${CSS.escape(sid)}"]`);
  }

  function screen(target) {
    const key = target.kind + ":" + target.sid;
    let s = screens.get(key);
    if (s) return s;
    s = { watchers: new Set(), watch: () => {} };
    s.add = (x) => {
      s.watchers.add(x);
      if (s.watchers.size === 1) s.watch(true);
    };
    s.remove = (x) => {
      if (s.watchers.delete(x) && !s.watchers.size) s.watch(false);
    };
    const check = () => {
      if (!s.watchers.size) return;
      const text = s.text();
      for (const x of [...s.watchers]) {
        if (count(text, x.paint.text) > x.paint.before) {
          s.remove(x);
          x.paint.drawn = now();
          x.paint.inFrame = inFrame;
          afterPaint((frameEnd, next) => {
            x.paint.frameEnd = frameEnd;
            x.paint.at = next;
            settle(x);
          });
        }
      }
    };
    if (target.kind === "lk") {
      const root = lkRoot(target.sid);
      const rows = root.querySelector(".xterm-rows");
      s.text = () => {
        const lines = [...rows.children].map((r) => r.textContent);
        // Text drawn outside xterm's rows (decorations, an overlay of predictions).
        for (const el of root.querySelectorAll(".xterm-decoration-container, [data-labkernel-overlay]")) {
          lines.push(el.textContent);
        }
        return lines.join("\n");
      };
      // Observing only while a paint is awaited: no mutation records for nothing.
      const observer = new MutationObserver(check);
      const screenEl = root.querySelector(".xterm-screen");
      s.watch = (on) => {
        if (on) observer.observe(screenEl, { childList: true, subtree: true, characterData: true });
        else observer.disconnect();
      };
    } else {
      const term = window.__jl[target.sid].content._term;
      s.text = () => {
        const buf = term.buffer.active;
        const lines = [];
        for (let y = buf.viewportY; y < buf.viewportY + term.rows; y++) {
          const line = buf.getLine(y);
          lines.push(line ? line.translateToString(true) : "");
        }
        return lines.join("\n");
      };
      term.onRender(check);
    }
    screens.set(key, s);
    return s;
  }

  function count(text, needle) {
    let n = 0;
    for (let i = text.indexOf(needle); i >= 0; i = text.indexOf(needle, i + needle.length)) n++;
    return n;
  }

  /**
   * Wait for the next keydown's effects: `echo` ({kind, sid, text}: output holding
   * `text` arrives for that terminal) and/or `paint` ({target, text}: one more
   * occurrence of `text` is drawn on that terminal's screen than now). `t0` is the
   * next keydown (or `start`, a performance.now() value, if given). Returns an id;
   * `B.result(id)` is a promise of {echo, paint} in ms from t0 (null: not seen before
   * `timeout` ms).
   */
  B.promises = new Map();
  B.expect = ({ echo = null, paint = null, timeout = 15000, start = null }) => {
    const x = {
      id: B.nextId++, t0: start, stamp: null,
      echo: echo ? { ...echo, at: null } : null,
      paint: paint ? { ...paint, at: null, before: 0 } : null,
    };
    B.promises.set(x.id, new Promise((resolve) => { x.resolve = resolve; }));
    if (paint) {
      const s = screen(paint.target);
      x.paint.before = count(s.text(), paint.text);
      x.paint.screen = s;
      s.add(x);
    }
    x.timer = setTimeout(() => {
      x.timedOut = true;
      if (x.paint) x.paint.screen.remove(x);
      B.expects.delete(x.id);
      x.resolve(result(x));
    }, timeout);
    B.expects.set(x.id, x);
    return x.id;
  };
  B.result = (id) => {
    const p = B.promises.get(id);
    B.promises.delete(id);
    return p;
  };
  B.pending = (id) => B.expects.has(id);
  B.screenText = (target) => screen(target).text();

  // -- the wrappers -------------------------------------------------------------------
  // XMLHttpRequest: the listeners are added in the constructor, so they come before
  // any the page adds (also an `onload` set before `open`).
  const XHR0 = window.XMLHttpRequest;
  window.XMLHttpRequest = class extends XHR0 {
    constructor(...args) {
      super(...args);
      const xhr = this;
      const on = () => {
        const r = xhr.__lkbReader;
        if (!r || xhr.readyState < 3) return;
        const done = xhr.readyState === 4;
        if (r.sse || r.lines || done) {
          // A stream is read as it comes; anything else once (at its end: reading a
          // growing responseText at every chunk of a flood costs the page).
          let text = "";
          try {
            text = xhr.responseText || "";
          } catch (e) {
            return; // not a text answer
          }
          const piece = text.slice(r.seen);
          r.seen = text.length;
          if (piece || done) r.feed(piece, now(), done);
        } else if (r.first === null) {
          r.first = now();
        }
      };
      super.addEventListener("readystatechange", () => {
        if (!xhr.__lkbInfo) return;
        if (xhr.readyState === 2) {
          xhr.__lkbReader = new Reader(xhr.__lkbInfo, xhr.getResponseHeader("content-type"));
          xhr.__lkbReader.seen = 0;
        }
        on();
      });
      super.addEventListener("progress", () => {
        if (xhr.__lkbInfo) on();
      });
    }

    open(method, url, ...rest) {
      this.__lkbInfo = lkInfo(url);
      this.__lkbReader = null;
      return super.open(method, url, ...rest);
    }
  };

  // fetch: the page gets a Response whose body is read through here, so each chunk is
  // timed (and decoded) before the page's read of it resolves.
  const fetch0 = window.fetch;
  const NO_BODY = [101, 204, 205, 304];
  window.fetch = function (input, init) {
    const url = input && typeof input === "object" && "url" in input ? input.url : input;
    const info = lkInfo(url);
    const p = fetch0.call(this, input, init);
    if (!info) return p;
    return p.then((response) => {
      if (!response.body || NO_BODY.includes(response.status)) return response;
      const reader = new Reader(info, response.headers.get("content-type"));
      const source = response.body.getReader();
      const text = new TextDecoder();
      const feed = (piece, t, last) => {
        try {
          reader.feed(piece, t, last);
        } catch (e) {
          B.errors.push("fetch: " + e);
        }
      };
      const body = new ReadableStream({
        async pull(controller) {
          let got;
          try {
            got = await source.read();
          } catch (e) {
            controller.error(e);
            return;
          }
          const t = now();
          if (got.done) {
            feed(text.decode(), t, true);
            controller.close();
            return;
          }
          feed(text.decode(got.value, { stream: true }), t, false);
          controller.enqueue(got.value);
        },
        cancel(reason) {
          return source.cancel(reason);
        },
      });
      const wrapped = new Response(body, {
        status: response.status, statusText: response.statusText, headers: response.headers,
      });
      for (const key of ["url", "redirected", "type"]) Object.defineProperty(wrapped, key, { value: response[key] });
      return wrapped;
    });
  };

  const ES = window.EventSource;
  if (ES) {
    window.EventSource = class extends ES {
      constructor(url, init) {
        super(url, init);
        const info = lkInfo(url) || { kind: "lk", sid: null };
        const hooked = new Set();
        this.__lkbHook = (type) => {
          if (hooked.has(type)) return;
          hooked.add(type);
          ES.prototype.addEventListener.call(this, type, (e) => {
            const t = now();
            B.arrivals += 1;
            if (typeof e.data !== "string") return;
            B.bytes.lk += e.data.length;
            if (e.data.includes(MARK)) mark("lk", info.sid, t);
            const out = [];
            if (e.data.length <= BIG) decodeJson(e.data, info.sid, out, true);
            for (const o of out) output("lk", o.sid, o.data, t);
          });
        };
        this.__lkbHook("message");
      }

      addEventListener(type, ...rest) {
        this.__lkbHook?.(type);
        return super.addEventListener(type, ...rest);
      }
    };
  }

  const WS = window.WebSocket;
  window.WebSocket = class extends WS {
    constructor(url, ...rest) {
      super(url, ...rest);
      const info = jlInfo(url) || lkInfo(url);
      if (!info) return;
      this.addEventListener("message", (e) => {
        if (typeof e.data !== "string") return;
        const t = now();
        const r = new Reader(info, "");
        r.feed(e.data, t, true);
      });
    }
  };
})();
