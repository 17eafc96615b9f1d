// Predictive echo (predict.js, wired in termio.js) against the real xterm.js
// parser and buffer, which run in node without a DOM (as in termio.test.js; the
// @xterm/headless package is the same core without the renderer, so it would add
// a dependency and nothing else). The property: whatever is typed and whatever
// the server answers, the screen is the server's wherever no prediction is
// drawn, a prediction lies only on cells the server left blank, and once the
// output has arrived and the timeouts have passed, the screen — cells,
// attributes, cursor, modes, saved cursor — is exactly what the server's output
// alone draws. The reference is a second xterm fed the output only.
//
// Some checks read xterm's private state (`_core`: the current attributes, the
// parser's state, the raw cell words): test-only, to pin down "exactly".
import assert from "node:assert/strict";
import { test } from "node:test";

import xterm from "@xterm/xterm";

import { AttrTracker, Predictor, STYLE, VtScanner, classifyKey, isNarrow } from "../src/predict.js";
import { TerminalIO } from "../src/termio.js";
import { prng } from "./fake.js";

const { Terminal } = xterm;

const COLS = 40;
const ROWS = 8;

const newTerm = () => new Terminal({ cols: COLS, rows: ROWS, scrollback: 100, allowProposedApi: true, logLevel: "off" });

/** A manual clock and timers for the predictor (xterm's own parsing runs on node's). */
class Clock {
  constructor() {
    this.t = 1000;
    this.timers = new Map();
    this.id = 1;
  }

  now = () => this.t;

  setTimeout = (fn, ms) => {
    const id = this.id++;
    this.timers.set(id, { at: this.t + ms, fn });
    return id;
  };

  clearTimeout = (id) => {
    this.timers.delete(id);
  };

  advanceTo(t) {
    for (;;) {
      let next = null;
      for (const entry of this.timers) if (entry[1].at <= t && (!next || entry[1].at < next[1].at)) next = entry;
      if (!next) break;
      this.timers.delete(next[0]);
      this.t = Math.max(this.t, next[1].at);
      next[1].fn();
    }
    this.t = Math.max(this.t, t);
  }
}

function rig({ predict = true } = {}) {
  const clock = new Clock();
  const term = newTerm();
  const ref = newTerm();
  const sent = [];
  const io = new TerminalIO(term, { onInput: (data) => sent.push(data), predict, now: clock.now, timers: clock });
  let refPending = 0;
  const idle = async () => {
    for (let i = 0; i < 100000 && (io.busy || io.queue.length || refPending); i += 1) {
      await new Promise((resolve) => setImmediate(resolve));
    }
    assert.ok(!io.busy && !io.queue.length && !refPending, "the queue never drained");
  };
  const output = async (text) => {
    io.write(text);
    refPending += 1;
    ref.write(text, () => { refPending -= 1; });
    await idle();
  };
  const type = async (data) => {
    term.input(data, true);
    await idle();
  };
  const advance = async (ms) => {
    clock.advanceTo(clock.t + ms);
    await idle();
  };
  return { clock, term, ref, io, sent, idle, output, type, advance };
}

function cellKey(c) {
  return [c.getChars(), c.getWidth(), c.getFgColorMode(), c.getFgColor(), c.getBgColorMode(), c.getBgColor(),
    c.isBold(), c.isDim(), c.isItalic(), c.isUnderline(), c.isBlink(), c.isInverse(), c.isInvisible(),
    c.isStrikethrough(), c.isOverline()].join("|");
}

const isBlank = (c) => (c.getChars() === "" || c.getChars() === " ") && c.getWidth() === 1 && c.isAttributeDefault();

/** xterm's state beyond the cells that output can depend on (private, test-only). */
function terminalState(term) {
  const core = term._core;
  const a = core._inputHandler._curAttrData;
  const b = core.buffer;
  const saved = b.savedCurAttrData;
  return {
    type: term.buffer.active.type,
    baseY: term.buffer.active.baseY,
    length: term.buffer.active.length,
    modes: { ...term.modes },
    attr: [a.fg, a.bg, a.extended.underlineStyle, a.extended.underlineColor, a.extended.urlId],
    saved: [b.savedX, b.savedY, saved.fg, saved.bg],
    hidden: core.coreService.isCursorHidden,
    parser: core._inputHandler._parser.currentState,
    scroll: [b.scrollTop, b.scrollBottom],
  };
}

/** Every cell and line word, raw (private): what a screen comparison cannot miss. */
function rawLines(term) {
  const lines = term._core.buffer.lines;
  const out = [];
  for (let i = 0; i < lines.length; i += 1) {
    const line = lines.get(i);
    out.push(JSON.stringify([line.isWrapped, Array.from(line._data), line._combined,
      Object.entries(line._extendedAttrs).map(([k, e]) => [k, e.underlineStyle, e.underlineColor, e.urlId])]));
  }
  return out;
}

function sameWords(a, b) {
  const x = a._data;
  const y = b._data;
  if (x.length !== y.length) return false;
  for (let i = 0; i < x.length; i += 1) if (x[i] !== y[i]) return false;
  return JSON.stringify(a._combined) === JSON.stringify(b._combined)
    && Object.keys(a._extendedAttrs).join() === Object.keys(b._extendedAttrs).join();
}

/** The predictions drawn now cover only blank server cells; everything else is the server's. */
function assertConsistent(io, term, ref, where) {
  const d = io.predictor?.drawn || null;
  const ours = term.buffer.active;
  const theirs = ref.buffer.active;
  assert.equal(ours.type, theirs.type, `${where}: buffer`);
  assert.equal(ours.length, theirs.length, `${where}: lines`);
  assert.equal(ours.baseY, theirs.baseY, `${where}: scroll`);
  const rawOurs = term._core.buffer.lines;
  const rawTheirs = ref._core.buffer.lines;
  for (let y = 0; y < theirs.length; y += 1) {
    const a = ours.getLine(y);
    const b = theirs.getLine(y);
    assert.equal(a.isWrapped, b.isWrapped, `${where}: line ${y} wrapped`);
    const predicted = d && y === theirs.baseY + d.row;
    // The raw words first (fast); cell by cell where they differ or predictions lie.
    if (!predicted && sameWords(rawOurs.get(y), rawTheirs.get(y))) continue;
    for (let x = 0; x < COLS; x += 1) {
      const ca = a.getCell(x);
      const cb = b.getCell(x);
      if (predicted && x >= d.col && x < d.col + d.text.length) {
        assert.ok(isBlank(cb), `${where}: a prediction over the server's ${JSON.stringify(cb.getChars())} at ${y},${x}`);
        assert.equal(ca.getChars(), d.text[x - d.col], `${where}: prediction at ${x}`);
        assert.ok(ca.isDim() && !ca.isBold() && ca.getFgColorMode() === 0 && ca.getBgColorMode() === 0,
          `${where}: a prediction is dim and nothing else`);
      } else {
        assert.equal(cellKey(ca), cellKey(cb), `${where}: cell ${y},${x}`);
      }
    }
  }
  const shift = d ? d.text.length : 0;
  if (d) assert.deepEqual([theirs.cursorX, theirs.cursorY], [d.col, d.row], `${where}: predictions start at the cursor`);
  assert.deepEqual([ours.cursorX, ours.cursorY], [theirs.cursorX + shift, theirs.cursorY], `${where}: cursor`);
  const sa = terminalState(term);
  const sb = terminalState(ref);
  assert.deepEqual(sa, sb, `${where}: terminal state`);
}

function assertSame(term, ref, where) {
  assert.deepEqual(terminalState(term), terminalState(ref), `${where}: terminal state`);
  assert.deepEqual([term.buffer.active.cursorX, term.buffer.active.cursorY],
    [ref.buffer.active.cursorX, ref.buffer.active.cursorY], `${where}: cursor`);
  assert.deepEqual(rawLines(term), rawLines(ref), `${where}: cells`);
}

const dimCells = (term) => {
  const b = term.buffer.active;
  let n = 0;
  for (let y = 0; y < b.length; y += 1) for (let x = 0; x < COLS; x += 1) if (b.getLine(y).getCell(x).isDim()) n += 1;
  return n;
};

// -- the pieces -----------------------------------------------------------------------

/** Parse at once, as xterm does inside a write (private, test-only: thousands of steps). */
const parseNow = (term, text) => term._core._inputHandler.parse(text);

test("keys: printable narrow characters are predicted, Backspace erases, the rest is a boundary", () => {
  assert.deepEqual(classifyKey("a"), { kind: "char", char: "a" });
  assert.deepEqual(classifyKey(" "), { kind: "char", char: " " });
  assert.deepEqual(classifyKey("é"), { kind: "char", char: "é" });
  assert.deepEqual(classifyKey("\x7f"), { kind: "erase" });
  for (const other of ["\r", "\t", "\x1b[A", "\x1b[D", "\x03", "\x15", "\b", "\x1b", "ab", "中", "😀", "\u0301", "\u00ad", "\x1b[200~x\x1b[201~"]) {
    assert.equal(classifyKey(other).kind, "other", JSON.stringify(other));
  }
});

test("every character predicted is one cell wide in xterm", async () => {
  const term = newTerm();
  for (let c = 0x20; c <= 0x24f; c += 1) {
    const ch = String.fromCharCode(c);
    if (!isNarrow(ch)) continue;
    await new Promise((r) => term.write(`\r\x1b[K${ch}`, r));
    assert.equal(term.buffer.active.cursorX, 1, `U+${c.toString(16)} is not one cell wide`);
    assert.equal(term.buffer.active.getLine(term.buffer.active.baseY + term.buffer.active.cursorY).getCell(0).getChars(), ch);
  }
});

test("property: VtScanner says 'between sequences' exactly when xterm's parser is in its ground state", () => {
  const tokens = ["a", "é", "中", "\r\n", "\x1b", "[", "31", ";", "m", "\x1b[", "?25", "h", "\x1b]0;t", "\x07", "\x1b\\",
    "\x1bP$q", "m", "\x1b_x", "\x18", "\x1a", "\x9b", "2J", "\x9d", "\x9c", "\x90", "\x1b(", "0", "B", "\x1b#", "8",
    "\x7f", "\x00", "<", ">", ":", " ", "\x1b[>", "c", "\u00a0", "\x1bX", "\x1b^", "\x1b7", "\x0e"];
  for (let seed = 1; seed <= 40; seed += 1) {
    const rand = prng(seed);
    const term = newTerm();
    const scanner = new VtScanner();
    for (let i = 0; i < 200; i += 1) {
      let chunk = "";
      for (let j = 0, n = 1 + Math.floor(rand() * 4); j < n; j += 1) chunk += tokens[Math.floor(rand() * tokens.length)];
      scanner.scan(chunk);
      parseNow(term, chunk);
      const state = term._core._inputHandler._parser.currentState;
      assert.equal(scanner.ground, state === 0, `seed ${seed} step ${i}: after ${JSON.stringify(chunk)} xterm is in state ${state}`);
    }
  }
});

test("property: AttrTracker's 'default' is xterm's (fg and bg words 0), never wrongly", () => {
  const sgr = ["0", "", "1", "2", "3", "4", "4:0", "4:3", "4:7", "5", "7", "8", "9", "21", "22", "23", "24", "25", "27",
    "28", "29", "31", "39", "41", "49", "53", "55", "59", "92", "104", "38;5;3", "48;5;200", "38;2;1;2;3",
    "48;2;9;9;9", "58;5;1", "58:2::1:2:3", "38:5:4", "38;5", "38;7;1", "1:2", "99"];
  const other = ["\x1b7", "\x1b8", "\x1b[s", "\x1b[u", "\x1b[?1048h", "\x1b[?1048l", "\x1b[?1049h", "\x1b[?1049l",
    "\x1b[?1047h", "\x1b[?1047l", "\x1b[!p", "\x1b[1\"q", "\x1b[0\"q", "\x1b]8;;http://x\x07", "\x1b]8;;\x07",
    "\x1b]8;id=1;http://y\x1b\\", "\x1bc", "x", "\x1b[?1049;25h"];
  let decided = 0;
  for (let seed = 1; seed <= 60; seed += 1) {
    const rand = prng(seed);
    const clock = new Clock();
    const term = newTerm();
    const io = new TerminalIO(term, { onInput: () => {}, now: clock.now, timers: clock });
    for (let i = 0; i < 120; i += 1) {
      let chunk;
      if (rand() < 0.6) {
        const params = [];
        for (let j = 0, n = Math.floor(rand() * 3) + 1; j < n; j += 1) params.push(sgr[Math.floor(rand() * sgr.length)]);
        chunk = `\x1b[${params.join(";")}m`;
      } else chunk = other[Math.floor(rand() * other.length)];
      parseNow(term, chunk); // the hooks io registered run as with io.write
      const a = term._core._inputHandler._curAttrData;
      const actual = a.fg === 0 && a.bg === 0;
      if (io.attrs.isDefault) assert.ok(actual, `seed ${seed} step ${i}: says default after ${JSON.stringify(chunk)}: fg ${a.fg} bg ${a.bg}`);
      if (!io.attrs.unknown) {
        assert.equal(io.attrs.isDefault, actual, `seed ${seed} step ${i}: ${JSON.stringify(chunk)}`);
        decided += 1;
      }
    }
  }
  assert.ok(decided > 4000, `the tracker gave up too often (${decided} answers)`);
});

// -- the predictor in a terminal: cases --------------------------------------------------

/** A rig at a prompt whose first key was echoed (prediction holds until then). */
async function atPrompt(options) {
  const r = rig(options);
  await r.output("$ ");
  await r.type("l");
  assert.equal(dimCells(r.term), 0, "the first key is held until its echo");
  await r.output("l");
  return r;
}

test("a key is drawn at once, dim, and the echo makes it the server's", async () => {
  const r = await atPrompt();
  await r.type("s");
  assert.equal(r.term.buffer.active.getLine(0).translateToString(true), "$ ls");
  assert.equal(dimCells(r.term), 1);
  assert.equal(r.term.buffer.active.cursorX, 4);
  assertConsistent(r.io, r.term, r.ref, "drawn");
  await r.type(" ");
  await r.type("-");
  assert.equal(r.io.predictor.drawn.text, "s -");
  await r.output("s");
  assertConsistent(r.io, r.term, r.ref, "partly confirmed");
  assert.equal(r.io.predictor.drawn.text, " -");
  await r.output(" -");
  assert.equal(r.io.predictor.drawn, null);
  assert.equal(dimCells(r.term), 0);
  assertSame(r.term, r.ref, "confirmed");
  assert.deepEqual(r.sent, ["l", "s", " ", "-"], "predictions are never input");
  assert.deepEqual([r.io.stats.predicted, r.io.stats.confirmed, r.io.stats.rolledBack], [3, 3, 0]);
});

test("other output instead of the echo rolls the prediction back exactly, and holds until the next line", async () => {
  const r = await atPrompt();
  await r.type("s");
  await r.output("\x1b[1;31mX\x1b[0m"); // the server did something else
  assert.equal(r.io.predictor.drawn, null);
  assertSame(r.term, r.ref, "rolled back");
  assert.equal(r.io.stats.rollbacks, 1);
  await r.output("s");
  await r.type("x");
  await r.output("x");
  await r.type("y");
  assert.equal(dimCells(r.term), 0, "no prediction until the cursor has changed lines");
  await r.output("y");
  await r.type("\r");
  await r.output("\r\n$ ");
  await r.type("a");
  await r.output("a");
  await r.type("b");
  assert.equal(dimCells(r.term), 1, "predicting again on the next line");
});

test("no echo within the timeout: rolled back", async () => {
  const r = await atPrompt();
  await r.type("s");
  assert.equal(dimCells(r.term), 1);
  await r.advance(999);
  assert.equal(dimCells(r.term), 1);
  await r.advance(2);
  assert.equal(dimCells(r.term), 0);
  assertSame(r.term, r.ref, "timed out");
  assert.equal(r.io.stats.rolledBack, 1);
});

test("after Enter nothing is drawn until a key is seen echoed: a password prompt shows nothing", async () => {
  const r = await atPrompt();
  await r.type("\r");
  await r.output("\r\nPassword: ");
  for (const ch of "secret") await r.type(ch);
  assert.equal(dimCells(r.term), 0);
  await r.advance(5000);
  await r.type("\r");
  await r.output("\r\n$ ");
  await r.type("a");
  assert.equal(dimCells(r.term), 0, "the first key after Enter is held");
  await r.output("a");
  await r.type("b");
  assert.equal(dimCells(r.term), 1);
  assertConsistent(r.io, r.term, r.ref, "after");
});

test("a key typed before the prompt arrives is held, even if the prompt ends with it", async () => {
  const r = await atPrompt();
  await r.type("\r");
  await r.type(" "); // typed ahead; the prompt ends with a space
  await r.output("\r\nPassword: ");
  await r.type("x");
  await r.type("y");
  assert.equal(dimCells(r.term), 0);
});

test("Backspace takes back a drawn key at once; over an echoed key it waits for the server", async () => {
  const r = await atPrompt();
  await r.type("s");
  await r.type("x");
  await r.type("\x7f");
  assert.equal(r.io.predictor.drawn.text, "s");
  assertConsistent(r.io, r.term, r.ref, "erased a prediction");
  await r.output("sx");
  await r.output("\b\x1b[K");
  assertSame(r.term, r.ref, "the server erased it too");
  await r.type("\x7f"); // over the server's s
  assert.equal(dimCells(r.term), 0);
  await r.type("k");
  assert.equal(dimCells(r.term), 0, "not drawn over the s the server still shows");
  await r.output("\b \b");
  assert.equal(r.io.predictor.drawn.text, "k", "drawn over the space the erase left");
  assertConsistent(r.io, r.term, r.ref, "over a space");
  await r.advance(3000);
  assertSame(r.term, r.ref, "the space restored");
});

test("Tab completion: the keys before it are confirmed by the completed line, and prediction resumes after an echo", async () => {
  const r = await atPrompt();
  await r.type("s");
  await r.type("\t");
  assert.equal(r.io.predictor.drawn.text, "s", "the drawn key stays until the server answers");
  await r.output("st ");
  assert.equal(r.io.stats.confirmed, 1);
  assert.equal(r.io.stats.rollbacks, 0);
  await r.type("a");
  assert.equal(dimCells(r.term), 0);
  await r.output("a");
  await r.type("b");
  assert.equal(dimCells(r.term), 1);
});

test("the alternate screen, a hidden cursor, insert mode, colours left on and a cut sequence: nothing drawn", async () => {
  for (const [name, enter, leave] of [
    ["alternate screen", "\x1b[?1049h", "\x1b[?1049l"],
    ["hidden cursor", "\x1b[?25l", "\x1b[?25h"],
    ["insert mode", "\x1b[4h", "\x1b[4l"],
    ["colour left on", "\x1b[32m", "\x1b[0m"],
    ["background left on", "\x1b[44m", "\x1b[49m"],
    ["a sequence cut in two", "\x1b[3", "1m\x1b[0m"],
  ]) {
    const r = await atPrompt();
    await r.output(enter);
    await r.type("s");
    assert.equal(dimCells(r.term), 0, `${name}: drawn`);
    await r.output(leave);
    assertConsistent(r.io, r.term, r.ref, name);
    await r.advance(5000);
    assertSame(r.term, r.ref, name);
  }
});

test("a line that reaches the last column is not predicted there", async () => {
  const r = await atPrompt();
  const cols = r.term.cols;
  for (let i = 3; i < cols - 1; i += 1) await r.type("a");
  assert.equal(r.io.predictor.drawn.text.length, cols - 4, "up to the column before the last");
  await r.type("b");
  assert.equal(r.io.predictor.drawn.text.length, cols - 4, "the last column is never drawn");
  assertConsistent(r.io, r.term, r.ref, "at the margin");
});

test("prediction off: keys are only sent, nothing is drawn; turning it off takes predictions back", async () => {
  const r = rig({ predict: false });
  await r.output("$ ");
  for (const ch of "ls -la") await r.type(ch);
  assert.equal(dimCells(r.term), 0);
  assert.equal(r.io.predictor, null);
  assert.deepEqual(r.sent, [..."ls -la"]);

  const s = await atPrompt();
  await s.type("s");
  assert.equal(dimCells(s.term), 1);
  s.io.setPredict(false);
  await s.idle();
  assertSame(s.term, s.ref, "turned off");
  await s.type("x");
  assert.equal(dimCells(s.term), 0);
});

test("a resize takes predictions back first", async () => {
  const r = await atPrompt();
  await r.type("s");
  r.io.resize(30, ROWS);
  r.ref.resize(30, ROWS);
  await r.idle();
  assert.equal(r.term.cols, 30);
  assertSame(r.term, r.ref, "resized");
});

test("replayed output: keys typed meanwhile are not predicted, and queries are still not answered", async () => {
  const r = rig();
  const history = "$ vim\r\n\x1b[?1049h\x1b[6n~\x1b[?1049l$ ".repeat(3000);
  const drawn = new Promise((resolve) => r.io.write(history, { replay: true }, resolve));
  r.ref.write(history);
  r.term.input("a", true);
  await drawn;
  await r.idle();
  assert.deepEqual(r.sent, ["a"]);
  assert.equal(dimCells(r.term), 0);
});

// -- the property -------------------------------------------------------------------------

const WIDE = "中";
const DIGITS = "0123456789"; // typed only as passwords: never drawn

/** A shell with a line editor, roughly readline's echo, in a few modes. */
class Shell {
  constructor(rand) {
    this.rand = rand;
    this.line = "";
    this.pos = 0;
    this.mode = "prompt"; // prompt | password | vim
    this.coloured = rand() < 0.5;
    this.erase = rand() < 0.5 ? "\b \b" : "\b\x1b[K";
    this.mute = rand() < 0.2 ? "aeiou" : ""; // a program that echoes only some keys
    this.highlight = rand() < 0.2; // echoes in colour, as zsh's syntax highlighting does
  }

  prompt() {
    return this.coloured ? "\x1b[1;32mu@h\x1b[0m:\x1b[34m~\x1b[00m$ " : "$ ";
  }

  redraw() {
    return this.prompt() + this.line + "\b".repeat(this.width(this.line.slice(this.pos)));
  }

  width(text) {
    return [...text].reduce((w, ch) => w + (ch === WIDE ? 2 : 1), 0);
  }

  key(k) {
    if (this.mode === "vim") {
      if (k === "q") {
        this.mode = "prompt";
        return `\x1b[?1049l${this.prompt()}`;
      }
      return k === "i" ? "\x1b[7;1H-- INSERT --\x1b[1;1H" : "";
    }
    if (this.mode === "password") {
      if (k === "\x03") {
        this.mode = "prompt";
        return `^C\r\n${this.prompt()}`;
      }
      if (k !== "\r") return "";
      this.mode = "prompt";
      return `\r\n${this.prompt()}`;
    }
    const tail = this.line.slice(this.pos);
    if (k === "\x7f") {
      if (!this.pos) return "\x07";
      const gone = [...this.line.slice(0, this.pos)].pop();
      this.line = this.line.slice(0, this.pos - gone.length) + tail;
      this.pos -= gone.length;
      if (!tail) return gone === WIDE ? "\b\b\x1b[K" : this.erase;
      return `${"\b".repeat(this.width(gone))}${tail}\x1b[K${"\b".repeat(this.width(tail))}`;
    }
    if (k === "\r") {
      const cmd = this.line;
      this.line = "";
      this.pos = 0;
      if (cmd === "pw") {
        this.mode = "password";
        return "\r\nPassword: ";
      }
      if (cmd === "vim") {
        this.mode = "vim";
        return "\r\n\x1b[?1049h\x1b[H\x1b[2J~\r\n~\x1b[H";
      }
      if (cmd === "clear") return `\r\n\x1b[H\x1b[2J${this.prompt()}`;
      return `\r\n${cmd ? `out: ${cmd}\r\n` : ""}${this.prompt()}`;
    }
    if (k === "\t") {
      if (this.line.endsWith("gi") && !tail) {
        this.line += "t ";
        this.pos += 2;
        return "t ";
      }
      return this.rand() < 0.5 ? "\x07" : `\r\nfoo  bar\r\n${this.redraw()}`;
    }
    if (k === "\x15") {
      this.line = tail;
      this.pos = 0;
      return `\r${this.prompt()}${tail}\x1b[K${"\b".repeat(this.width(tail))}`;
    }
    if (k === "\x03") {
      this.line = "";
      this.pos = 0;
      return `^C\r\n${this.prompt()}`;
    }
    if (k === "\x1b[D") {
      if (!this.pos) return "\x07";
      const ch = [...this.line.slice(0, this.pos)].pop();
      this.pos -= ch.length;
      return "\b".repeat(this.width(ch));
    }
    if (k === "\x1b[C") {
      if (!tail) return "\x07";
      const ch = [...tail][0];
      this.pos += ch.length;
      return ch;
    }
    let text = k;
    if (k.startsWith("\x1b[200~")) text = k.slice(6, -6);
    if (/[\x00-\x1f]/.test(text)) return "";
    this.line = this.line.slice(0, this.pos) + text + tail;
    this.pos += text.length;
    if (tail) return `${text}${tail}${"\b".repeat(this.width(tail))}`;
    if (this.mute && this.mute.includes(text)) return "";
    return this.highlight && this.rand() < 0.5 ? `\x1b[33m${text}\x1b[0m` : text;
  }

  background() {
    if (this.mode !== "prompt") return "\x1b]0;title\x07";
    return `\r\n[1]+  Done    sleep 1\r\n${this.redraw()}`;
  }
}

function keystrokes(rand) {
  const r = rand();
  if (r < 0.5) return [String.fromCharCode(97 + Math.floor(rand() * 26))];
  if (r < 0.56) return [" "];
  if (r < 0.64) return ["\x7f"];
  if (r < 0.7) return ["\r"];
  if (r < 0.72) return ["\t"];
  if (r < 0.75) return [rand() < 0.5 ? "\x1b[D" : "\x1b[C"];
  if (r < 0.77) return ["\x15"];
  if (r < 0.78) return ["\x03"];
  if (r < 0.8) return [WIDE];
  if (r < 0.83) return ["é"];
  if (r < 0.84) return ["\x1b[200~xy\x1b[201~"];
  if (r < 0.88) {
    const password = [...Array(1 + Math.floor(rand() * 6))].map(() => DIGITS[Math.floor(rand() * 10)]);
    return ["\x03", "p", "w", "\r", ...password, "\r"]; // at an empty line, whatever the mode
  }
  if (r < 0.91) return ["v", "i", "m", "\r", "i", "x", "q"];
  if (r < 0.94) return ["g", "i", "\t"];
  if (r < 0.96) return ["c", "l", "e", "a", "r", "\r"];
  return [..."echo hello"];
}

/** Split `text` in 1–3 pieces anywhere but inside a surrogate pair (as the network may). */
function cut(text, rand) {
  const parts = [];
  let rest = text;
  while (rest && parts.length < 2 && rand() < 0.4) {
    let at = 1 + Math.floor(rand() * rest.length);
    if (/[\ud800-\udbff]/.test(rest[at - 1] ?? "")) at += 1;
    if (at >= rest.length) break;
    parts.push(rest.slice(0, at));
    rest = rest.slice(at);
  }
  if (rest) parts.push(rest);
  return parts;
}

test("property: random keys and server answers — the screen is the server's, predictions only on its blank cells, "
  + "and in the end exactly the server's", async () => {
  const totals = Predictor.newStats();
  for (let seed = 1; seed <= 40; seed += 1) {
    const rand = prng(seed);
    const r = rig();
    const shell = new Shell(rand);
    const up = 5 + rand() * 200; // one-way delays, ms
    const down = 5 + rand() * 200;
    const events = []; // {at, kind: "key" | "out", data}
    let t = 1000;
    let serverFree = 1000;
    let delivered = 1000;
    const serve = (at, produce) => {
      serverFree = Math.max(serverFree, at);
      const out = produce();
      if (!out) return;
      const stall = rand() < 0.05 ? 1500 + rand() * 2000 : 0; // an answer beyond the timeout
      delivered = Math.max(delivered, serverFree + down + stall);
      for (const part of cut(out, rand)) events.push({ at: delivered, kind: "out", data: part });
    };
    // the first output: a prompt
    events.push({ at: t, kind: "out", data: shell.prompt() });
    const pending = []; // keys on their way to the server: {at, key}
    for (let i = 0; i < 70; i += 1) {
      for (const key of keystrokes(rand)) {
        t += rand() < 0.15 ? 400 + rand() * 1500 : 20 + rand() * 180;
        events.push({ at: t, kind: "key", data: key });
        pending.push({ at: t + up, key });
      }
      if (rand() < 0.05) pending.push({ at: t + rand() * 300, background: true });
    }
    pending.sort((a, b) => a.at - b.at);
    for (const p of pending) serve(p.at, () => (p.background ? shell.background() : shell.key(p.key)));
    events.sort((a, b) => a.at - b.at || (a.kind === b.kind ? 0 : a.kind === "key" ? -1 : 1));

    let step = 0;
    for (const e of events) {
      step += 1;
      r.clock.advanceTo(e.at);
      await r.idle();
      if (e.kind === "key") await r.type(e.data);
      else await r.output(e.data);
      const where = `seed ${seed} step ${step} (${e.kind} ${JSON.stringify(e.data)})`;
      if (process.env.PREDICT_TRACE == seed) console.log(where, JSON.stringify(r.io.predictor.run && { row: r.io.predictor.run.row, col: r.io.predictor.run.col, m: r.io.predictor.run.m, texts: r.io.predictor.run.texts.slice(-1), frozen: r.io.predictor.run.frozen }), JSON.stringify(r.io.predictor.hold), r.io.predictor.tainted, JSON.stringify(r.ref.buffer.active.getLine(r.ref.buffer.active.baseY + r.ref.buffer.active.cursorY).translateToString(true)), r.ref.buffer.active.cursorX);
      assertConsistent(r.io, r.term, r.ref, where);
      const d = r.io.predictor.drawn;
      if (d) {
        assert.ok(![...d.text].some((ch) => DIGITS.includes(ch)), `${where}: a password key drawn`);
        assert.equal(r.ref.buffer.active.type, "normal", `${where}: drawn in the alternate screen`);
      }
    }
    await r.advance(20000);
    assert.equal(r.io.predictor.drawn, null, `seed ${seed}: predictions left`);
    assertSame(r.term, r.ref, `seed ${seed}: the end`);
    assert.deepEqual(r.sent, events.filter((e) => e.kind === "key").map((e) => e.data), `seed ${seed}: input is the keys`);
    for (const k of Object.keys(totals)) totals[k] += r.io.stats[k];
  }
  if (process.env.PREDICT_TOTALS) console.log(JSON.stringify(totals));
  // The property is only as good as the predictions it saw.
  assert.ok(totals.predicted > 300, `predicted ${totals.predicted}`);
  assert.ok(totals.confirmed > 200, `confirmed ${totals.confirmed}`);
  assert.ok(totals.rolledBack > 10 && totals.rollbacks > 5, `rolled back ${totals.rolledBack} in ${totals.rollbacks}`);
  assert.ok(totals.confirmed < totals.predicted, "some predictions were wrong");
});

test("the style is dim only, and the undo is plain cursor moves and erases", () => {
  assert.equal(STYLE.on, "\x1b[2m");
  assert.equal(STYLE.off, "\x1b[22m");
  const p = new Predictor({ now: () => 0 });
  assert.equal(p.clear(), "");
  assert.ok(new AttrTracker().isDefault);
});
