// What passes between a session and xterm.js: output written in pieces with a
// callback once parsed (flow control), and input handed on — except xterm's
// answers to terminal queries in replayed output.
//
// xterm answers queries by itself (cursor position, device attributes, colours,
// modes, …) and its answers come out of `onData` like keystrokes. Output from
// before the view attached is replayed on every reload and in every second view;
// the program that asked is gone or was answered then, so the answers would be
// typed into the shell (`2RR0;276;0c10;rgb:…` at the prompt). Here they are held
// back, and only queries that arrive live are answered.
//
// How an answer is told from a keystroke: xterm parses a write synchronously (in
// a task of its own, or inside `write()`), and answers from inside that parse;
// keystrokes come from DOM events, never from inside a parse. Each query sequence
// has a parser hook here that runs just before xterm's own handler (hooks run
// latest first and return false, so xterm still handles it): it notes whether
// the write being parsed is replayed output, and that note, cleared at the end of
// the task, decides what the answer's `onData` does. Which write is being parsed
// comes from xterm's write callbacks, which run in order right after each write's
// parse: the oldest write whose callback has not run. A flag around
// `write()` would not do (xterm parses later, in batches) and neither would one
// raised until the replay's callback (keystrokes typed meanwhile must go through).
//
// Predictive echo (predict.js) meets the same stream here. Everything that reaches
// xterm goes through one queue, one write at a time: the server's output (in
// pieces), the keys the predictor draws, its clock. So when the predictor looks at
// xterm's buffer, all that was written has been parsed, and what it writes lands
// exactly between two pieces of output — before each piece it takes its
// predictions back, after it compares and draws again, inside the same parse loop
// of xterm (a write from a write callback is parsed before xterm yields), so the
// page never paints the in-between. The cost is nil: xterm parses one piece at a
// time either way. Predictions are never input: they go to `term.write` only.
// xterm's answers to live queries come out of `onData` from inside a parse, never
// from a key: the same hooks tell them apart, and they are sent but not predicted.

import { pieces } from "./transport.js";
import { AttrTracker, Predictor, VtScanner } from "./predict.js";

/**
 * The sequences whose default handlers in xterm.js 5.5 answer (`triggerDataEvent`
 * in its InputHandler.ts and Terminal.ts), and queries newer terminals answer, so
 * that an upgrade of xterm cannot quietly reopen the hole.
 */
export const QUERIES = Object.freeze({
  csi: Object.freeze([
    { final: "c" }, // DA1: ESC[c
    { prefix: ">", final: "c" }, // DA2: ESC[>c
    { prefix: "=", final: "c" }, // DA3
    { final: "n" }, // DSR: ESC[5n, ESC[6n (cursor position)
    { prefix: "?", final: "n" }, // DECDSR: ESC[?6n
    { intermediates: "$", final: "p" }, // DECRQM: ESC[4$p
    { prefix: "?", intermediates: "$", final: "p" }, // DECRQM: ESC[?2026$p
    { final: "t" }, // window reports: ESC[14t, ESC[16t, ESC[18t
    { prefix: "?", final: "h" }, // DECSET 1004 reports the focus at once
    { prefix: ">", final: "q" }, // XTVERSION
    { prefix: "?", final: "u" }, // kitty keyboard protocol query
  ]),
  osc: Object.freeze([4, 10, 11, 12, 52]), // colour queries (…;?), clipboard query
  dcs: Object.freeze([
    { intermediates: "$", final: "q" }, // DECRQSS
    { intermediates: "+", final: "q" }, // XTGETTCAP
  ]),
});

/**
 * One xterm's I/O for a session: `write(text, {replay}, done)` puts output in,
 * `onInput(data)` gets what the user typed and xterm's answers to live queries.
 * With `predict`, printable keys typed at a prompt are drawn before their echo.
 */
export class TerminalIO {
  constructor(term, { onInput, predict = false, now = () => performance.now(), timers = globalThis }) {
    this.term = term;
    this.now = now;
    this.timers = timers;
    this.parsing = []; // per write not yet parsed, oldest first: whether it is replayed output
    this.holding = false; // xterm is answering a query of replayed output
    this.answering = false; // xterm is answering a query: its onData is no key
    this.clearQueued = false;
    this.queue = []; // waiting for xterm: {kind: "output", text, replay, done} | "key" | "tick" | "call"
    this.busy = false; // a write of ours is in xterm, not yet parsed
    this.scanner = new VtScanner();
    this.attrs = new AttrTracker();
    this.cursorHidden = false;
    this.stats = Predictor.newStats();
    this.predictor = null;
    this.enabled = false;
    this.timer = null;
    this.timerAt = null;
    this.cell = undefined; // reused by the screen's reads
    this.screen = this._screen();
    const hook = () => {
      this.holding = this.parsing[0] === true;
      this.answering = true;
      if (!this.clearQueued) {
        this.clearQueued = true;
        // A parse never spans tasks; keystrokes come in tasks of their own.
        queueMicrotask(() => {
          this.holding = false;
          this.answering = false;
          this.clearQueued = false;
        });
      }
      return false; // xterm's own handler still runs
    };
    const { parser } = term;
    const attrs = this.attrs;
    const buffer = () => (term.buffer.active.type === "alternate" ? "alternate" : "normal");
    // What xterm's current attributes are, and whether the cursor shows (predict.js):
    // these hooks run before xterm's own handlers and leave them to act.
    const track = (fn) => (...args) => {
      fn(...args);
      return false;
    };
    this.subscriptions = [
      ...QUERIES.csi.map((id) => parser.registerCsiHandler(id, hook)),
      ...QUERIES.osc.map((id) => parser.registerOscHandler(id, hook)),
      ...QUERIES.dcs.map((id) => parser.registerDcsHandler(id, hook)),
      parser.registerCsiHandler({ final: "m" }, track((params) => attrs.sgr(params))),
      parser.registerCsiHandler({ final: "s" }, track(() => attrs.save(buffer()))),
      parser.registerCsiHandler({ final: "u" }, track(() => attrs.restore(buffer()))),
      parser.registerEscHandler({ final: "7" }, track(() => attrs.save(buffer()))),
      parser.registerEscHandler({ final: "8" }, track(() => attrs.restore(buffer()))),
      parser.registerEscHandler({ final: "c" }, track(() => {
        attrs.reset();
        this.cursorHidden = false;
      })),
      parser.registerCsiHandler({ intermediates: "!", final: "p" }, track(() => {
        attrs.softReset(buffer());
        this.cursorHidden = false;
      })),
      parser.registerCsiHandler({ intermediates: '"', final: "q" }, track((params) => attrs.protect(params[0]))),
      parser.registerOscHandler(8, track((data) => attrs.hyperlink(data))),
      parser.registerCsiHandler({ prefix: "?", final: "h" }, track((params) => this._modes(params, true, buffer()))),
      parser.registerCsiHandler({ prefix: "?", final: "l" }, track((params) => this._modes(params, false, buffer()))),
      term.onData((data) => {
        if (this.answering) {
          if (!this.holding) onInput(data);
          return;
        }
        onInput(data);
        if (this.enabled) this._enqueue({ kind: "key", data });
      }),
    ];
    this.setPredict(predict);
  }

  /**
   * Write `text`; `done()` once xterm has parsed all of it. Replayed output is
   * drawn, modes and all, but its queries are not answered. In pieces, so that
   * xterm yields to the page between them during a flood.
   */
  write(text, { replay = false } = {}, done = () => {}) {
    const parts = pieces(text);
    if (!parts.length) {
      done();
      return;
    }
    const last = parts.length - 1;
    parts.forEach((part, i) => {
      this.queue.push({ kind: "output", text: part, replay, done: i === last ? done : null });
    });
    this._pump();
  }

  /** True while replayed output is written but not yet parsed. */
  get replaying() {
    return this.parsing.includes(true) || this.queue.some((op) => op.kind === "output" && op.replay);
  }

  /** Whether keys are predicted; `setPredict(false)` takes every prediction back first. */
  get predicting() {
    return this.enabled;
  }

  setPredict(on) {
    on = !!on;
    if (on === this.enabled) return;
    this.enabled = on;
    if (on) {
      // A new predictor holds until it sees an echo: nothing is known about this line.
      this._enqueue({ kind: "call", fn: () => { this.predictor = new Predictor({ now: this.now, stats: this.stats }); } });
    } else {
      this._enqueue({ kind: "call", fn: () => { this.predictor = null; } });
    }
  }

  /** Input that did not come from the keyboard (a panel's button): the predictor holds. */
  external(data) {
    if (this.enabled && data) this._enqueue({ kind: "key", data, boundary: true });
  }

  /** Resize xterm, predictions taken back first (xterm would reflow them with the line). */
  resize(cols, rows) {
    const fn = () => {
      if (cols !== this.term.cols || rows !== this.term.rows) this.term.resize(cols, rows);
    };
    // Without predictions on the screen, at once, as output may still be queued (a flood).
    if (!this.predictor?.drawn) {
      this.predictor?.clear();
      fn();
    } else {
      this._enqueue({ kind: "call", fn });
    }
  }

  /** `term.reset()`, in order with what was written before (a new session is shown). */
  reset() {
    this._enqueue({
      kind: "call",
      keep: true, // nothing to take back: the reset clears it all
      fn: () => {
        this.term.reset();
        this.predictor?.reset();
        this.attrs.reset();
        this.scanner.reset();
        this.cursorHidden = false;
      },
    });
  }

  dispose() {
    if (this.timer !== null) this.timers.clearTimeout(this.timer);
    this.timer = null;
    this.enabled = false;
    this.queue = [];
    for (const s of this.subscriptions) s.dispose();
    this.subscriptions = [];
  }

  // -- the queue ---------------------------------------------------------------------

  _modes(params, on, active) {
    let which = active;
    for (const p of params) {
      if (p === 25) this.cursorHidden = !on;
      else if (p === 1048) {
        if (on) this.attrs.save(which);
        else this.attrs.restore(which);
      } else if (p === 1049) {
        if (on) {
          this.attrs.save(which);
          which = "alternate";
        } else {
          which = "normal";
          this.attrs.restore(which);
        }
      } else if (p === 47 || p === 1047) which = on ? "alternate" : "normal";
    }
  }

  _enqueue(op) {
    this.queue.push(op);
    this._pump();
  }

  _pump() {
    while (!this.busy && this.queue.length) this._run(this.queue.shift());
    if (!this.busy) this._schedule();
  }

  _run(op) {
    const P = this.predictor;
    if (op.kind === "output") {
      const undo = P ? P.before(this.screen) : "";
      this.scanner.scan(op.text);
      this._write(undo + op.text, op.replay, () => {
        if (this.predictor) this._draw(this.predictor.after(this.screen));
        op.done?.();
      });
    } else if (op.kind === "key") {
      if (P) this._draw(P.key(op.data, this.screen, { boundary: !!op.boundary || this.replaying }));
    } else if (op.kind === "tick") {
      if (P) this._draw(P.tick(this.screen));
    } else if (op.kind === "call") {
      const undo = P && !op.keep ? P.clear() : "";
      if (undo) this._write(undo, false, op.fn);
      else op.fn();
    }
  }

  _draw(sequence) {
    if (sequence) this._write(sequence, false, null);
  }

  _write(data, replay, after) {
    this.busy = true;
    this.parsing.push(replay);
    this.term.write(data, () => {
      this.parsing.shift();
      this.busy = false;
      after?.();
      this._pump();
    });
  }

  /** A timer for the predictor's next timeout, which goes through the queue too. */
  _schedule() {
    const at = this.predictor?.deadline ?? null;
    if (at === this.timerAt) return;
    if (this.timer !== null) this.timers.clearTimeout(this.timer);
    this.timer = null;
    this.timerAt = at;
    if (at === null) return;
    this.timer = this.timers.setTimeout(() => {
      this.timer = null;
      this.timerAt = null;
      this._enqueue({ kind: "tick" });
    }, Math.max(0, at - this.now()) + 1);
  }

  /** The terminal as predict.js sees it (read with nothing of ours unparsed). */
  _screen() {
    const io = this;
    const term = this.term;
    return {
      get cols() {
        return term.cols;
      },
      cursor() {
        const b = term.buffer.active;
        return { x: b.cursorX, y: b.cursorY };
      },
      cell(y, x) {
        const b = term.buffer.active;
        const c = b.getLine(b.baseY + y)?.getCell(x, io.cell);
        if (!c) return null;
        io.cell = c;
        return { chars: c.getChars(), width: c.getWidth(), plain: c.isAttributeDefault() };
      },
      get alternate() {
        return term.buffer.active.type !== "normal";
      },
      get mayDraw() {
        return !io.replaying && !io.cursorHidden && !term.modes.insertMode && io.attrs.isDefault && io.scanner.ground;
      },
    };
  }
}
