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

import { pieces } from "./transport.js";

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
 */
export class TerminalIO {
  constructor(term, { onInput }) {
    this.term = term;
    this.parsing = []; // per write not yet parsed, oldest first: whether it is replayed output
    this.holding = false; // xterm is answering a query of replayed output
    this.clearQueued = false;
    const hook = () => {
      this.holding = this.parsing[0] === true;
      if (!this.clearQueued) {
        this.clearQueued = true;
        // A parse never spans tasks; keystrokes come in tasks of their own.
        queueMicrotask(() => {
          this.holding = false;
          this.clearQueued = false;
        });
      }
      return false; // xterm's own handler still runs
    };
    const { parser } = term;
    this.subscriptions = [
      ...QUERIES.csi.map((id) => parser.registerCsiHandler(id, hook)),
      ...QUERIES.osc.map((id) => parser.registerOscHandler(id, hook)),
      ...QUERIES.dcs.map((id) => parser.registerDcsHandler(id, hook)),
      term.onData((data) => {
        if (!this.holding) onInput(data);
      }),
    ];
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
    parts.forEach((part, i) => {
      this.parsing.push(replay);
      this.term.write(part, () => {
        this.parsing.shift();
        if (i === parts.length - 1) done();
      });
    });
  }

  /** True while replayed output is written but not yet parsed. */
  get replaying() {
    return this.parsing.includes(true);
  }

  dispose() {
    for (const s of this.subscriptions) s.dispose();
    this.subscriptions = [];
  }
}
