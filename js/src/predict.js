// Predictive local echo (typeahead), as mosh and VS Code's terminal do it: a
// printable key typed at a shell prompt is drawn at once, dim, before the server
// has echoed it; the server's echo confirms it (its own cell replaces ours), and
// anything else rolls it back, the cells restored exactly.
//
// This module is pure: no DOM, no xterm. It sees the terminal through `screen`
// (below) and answers with the escape sequences to write; termio.js feeds it, in
// xterm's parse order, the keys, the server's output and the clock.
//
// How predictions stay out of the server's screen. xterm has no overlay, so a
// prediction is written into its buffer. It is drawn only where it can be taken
// back exactly with plain sequences, and it is always taken back before any of
// the server's output is parsed and drawn again after it:
//   - only over blank cells (never written, or a space) with default attributes,
//     at the cursor, with every cell up to the right margin blank — the end of
//     the line being typed — and never in the last column (no wrap, no scroll);
//   - only while the terminal's current attributes are the defaults (tracked by
//     AttrTracker from the sequences xterm parses), so that `ESC[2m` before the
//     characters and `ESC[22m` after them leave xterm's attributes as they were,
//     and an erase (ECH, which fills with the current background) makes cells
//     that are identical to never-written ones;
//   - only while xterm's parser is between sequences (VtScanner), so nothing of
//     ours lands inside the server's escape sequence;
//   - not in the alternate screen, with the cursor hidden, or in insert mode.
// The undo moves the cursor back with CUB, erases with ECH, rewrites the spaces
// that were there: cells, attributes and cursor are the server's again. Then
// the server's output is parsed onto the server's own screen, and we compare.
//
// How a prediction is confirmed: by the screen, not by the bytes (as mosh does,
// so readline's, zsh's and bash's ways of echoing all work). A run is the keys
// typed at one line since its anchor (the server's cursor when the run began);
// T_i is the line's text after the first i keys (a character appends, Backspace
// removes the last). After the server's output, the smallest i ≥ m (the keys
// confirmed so far) for which the screen shows T_i at the anchor with the cursor
// right after it says how far the server has got; the keys after i are drawn
// (when T_i is a prefix of T_n). If the screen shows no T_i, the server did
// something else (output between keys, a prompt redraw, a completion): the run
// ends, and what was drawn is simply not drawn again. A run also ends when its
// keys go unconfirmed for too long (the timeout).
//
// When not to predict: after any key we cannot predict (Enter, Tab, arrows,
// control keys, escape sequences, pastes, wide characters, Backspace past what
// this run typed) the run is frozen and prediction holds: keys are sent, nothing
// is drawn, until the server is seen echoing the first keys typed since — the
// cells left of its cursor spell them and the output that just arrived printed
// them; the keys typed after those are then drawn.
// So a password prompt (`read -s`, sudo), which never echoes, never shows a
// key, and neither does a program in raw mode that does not echo. After a
// rollback (a run that broke with keys unconfirmed, which the server may still
// echo later) prediction waits until the cursor has moved to another line.

/** Dim: `ESC[2m` before a prediction, `ESC[22m` after (touches nothing else: bold, which 22 also clears, is off). */
export const STYLE = Object.freeze({ on: "\x1b[2m", off: "\x1b[22m" });

const CSI = "\x1b[";

/**
 * True for a character that xterm certainly draws one cell wide: printable
 * ASCII and Latin-1 / Latin Extended (no combining marks there; the soft hyphen
 * left out). Anything else is not predicted.
 */
export function isNarrow(ch) {
  if (typeof ch !== "string" || ch.length !== 1) return false;
  const c = ch.charCodeAt(0);
  return (c >= 0x20 && c <= 0x7e) || (c >= 0xa0 && c <= 0x24f && c !== 0xad);
}

/** What a key typed (xterm's `onData`) does: `char`, `erase` (Backspace) or `other`. */
export function classifyKey(data) {
  if (data === "\x7f") return { kind: "erase" };
  if (isNarrow(data)) return { kind: "char", char: data };
  return { kind: "other" };
}

// -- Where xterm's parser is --------------------------------------------------------

const GROUND = 0;
const ESC = 1;
const ESC_INT = 2;
const CSI_ENTRY = 3;
const CSI_PARAM = 4;
const CSI_INT = 5;
const CSI_IGNORE = 6;
const OSC = 7;
const SOS = 8; // SOS, PM, APC strings
const DCS_ENTRY = 9;
const DCS_PARAM = 10;
const DCS_INT = 11;
const DCS_IGNORE = 12;
const DCS_PASS = 13;

const isExec = (c) => c <= 0x17 || c === 0x19 || (c >= 0x1c && c <= 0x1f);

/** One step of xterm 5.5's VT500 transition table (EscapeSequenceParser.ts), states only. */
function step(s, c) {
  if (c === 0x18 || c === 0x1a) return GROUND;
  if (c === 0x1b) return ESC; // also ends an OSC or DCS string (then ESC \ is ST)
  if (c >= 0x80 && c <= 0x9f) {
    if (c === 0x90) return DCS_ENTRY;
    if (c === 0x9b) return CSI_ENTRY;
    if (c === 0x9d) return OSC;
    if (c === 0x98 || c === 0x9e || c === 0x9f) return SOS;
    return GROUND;
  }
  const ascii = c < 0x80;
  switch (s) {
    case GROUND:
      return GROUND;
    case ESC:
      if (isExec(c) || c === 0x7f) return ESC;
      if (c >= 0x20 && c <= 0x2f) return ESC_INT;
      if (c === 0x5b) return CSI_ENTRY;
      if (c === 0x5d) return OSC;
      if (c === 0x50) return DCS_ENTRY;
      if (c === 0x58 || c === 0x5e || c === 0x5f) return SOS;
      return GROUND;
    case ESC_INT:
      if (isExec(c) || c === 0x7f || (c >= 0x20 && c <= 0x2f)) return ESC_INT;
      return GROUND;
    case CSI_ENTRY:
    case CSI_PARAM:
      if (isExec(c) || c === 0x7f) return s;
      if (c >= 0x30 && c <= 0x3b) return CSI_PARAM;
      if (c >= 0x3c && c <= 0x3f) return s === CSI_ENTRY ? CSI_PARAM : CSI_IGNORE;
      if (c >= 0x20 && c <= 0x2f) return CSI_INT;
      return GROUND; // a final byte, or an error
    case CSI_INT:
      if (isExec(c) || c === 0x7f || (c >= 0x20 && c <= 0x2f)) return CSI_INT;
      if (c >= 0x30 && c <= 0x3f) return CSI_IGNORE;
      return GROUND;
    case CSI_IGNORE:
      if (ascii && c >= 0x40 && c <= 0x7e) return GROUND;
      return CSI_IGNORE;
    case OSC:
      return c === 0x07 ? GROUND : OSC;
    case SOS:
      return ascii ? SOS : GROUND;
    case DCS_ENTRY:
    case DCS_PARAM:
      if (isExec(c) || c === 0x7f) return s;
      if (c >= 0x30 && c <= 0x3b) return DCS_PARAM;
      if (c >= 0x3c && c <= 0x3f) return s === DCS_ENTRY ? DCS_PARAM : DCS_IGNORE;
      if (c >= 0x20 && c <= 0x2f) return DCS_INT;
      if (c >= 0x40 && c <= 0x7e) return DCS_PASS;
      return GROUND;
    case DCS_INT:
      if (isExec(c) || c === 0x7f || (c >= 0x20 && c <= 0x2f)) return DCS_INT;
      if (c >= 0x30 && c <= 0x3f) return DCS_IGNORE;
      if (c >= 0x40 && c <= 0x7e) return DCS_PASS;
      return GROUND;
    case DCS_IGNORE:
    case DCS_PASS:
      return s;
    default:
      return GROUND;
  }
}

/**
 * Follows the server's output as xterm's parser will: `ground` is true when the
 * text scanned so far ends between sequences (and not inside a surrogate pair),
 * where a sequence of ours can be parsed without changing the meaning of theirs.
 */
export class VtScanner {
  constructor() {
    this.state = GROUND;
    this.split = false; // the last unit was a high surrogate
  }

  get ground() {
    return this.state === GROUND && !this.split;
  }

  scan(text) {
    let s = this.state;
    for (let i = 0; i < text.length; i += 1) {
      const c = text.charCodeAt(i);
      if (s === GROUND && c >= 0x20 && c < 0x7f) continue;
      s = step(s, c);
    }
    this.state = s;
    if (text.length) {
      const last = text.charCodeAt(text.length - 1);
      this.split = last >= 0xd800 && last <= 0xdbff;
    }
  }

  reset() {
    this.state = GROUND;
    this.split = false;
  }
}

// -- The terminal's current attributes ------------------------------------------------

/**
 * Mirrors what xterm 5.5's InputHandler does to its current attributes (SGR,
 * DECSC/DECRC and their DECSET forms, DECSTR, RIS, DECSCA, OSC 8), well enough to
 * answer one question exactly: are they the defaults? Anything it does not know
 * how xterm would take makes it answer no until the next `ESC[0m`.
 */
export class AttrTracker {
  constructor() {
    this.reset();
  }

  reset() {
    this.cur = AttrTracker.plain();
    this.saved = { normal: AttrTracker.plain(), alternate: AttrTracker.plain() };
    this.url = false; // an OSC 8 link is open (xterm keeps it across SGR 0)
    this.underline = 0; // the extended underline style
    this.unknown = false;
  }

  static plain() {
    return { fg: false, bg: false, flags: 0, ext: false }; // colours set, flag bits, HAS_EXTENDED
  }

  /** The attributes are exactly xterm's defaults (fg and bg words both 0). */
  get isDefault() {
    const a = this.cur;
    return !this.unknown && !a.fg && !a.bg && a.flags === 0 && !a.ext;
  }

  _updateExt() {
    this.cur.ext = this.underline !== 0 || this.url;
  }

  _sgr0() {
    this.cur.fg = false;
    this.cur.bg = false;
    this.cur.flags = 0;
    this.underline = 0;
    this.unknown = false;
    this._updateExt();
  }

  /** `ESC [ params m`, params as xterm's hooks get them (sub-parameters as arrays). */
  sgr(params) {
    const list = params.length ? params : [0];
    const F = AttrTracker.FLAGS;
    for (let i = 0; i < list.length; i += 1) {
      const p = list[i];
      if (typeof p !== "number") {
        this.unknown = true; // sub-parameters where xterm takes none
        return;
      }
      const sub = Array.isArray(list[i + 1]) ? list[i + 1] : null;
      if (sub && p !== 4 && p !== 38 && p !== 48 && p !== 58) {
        this.unknown = true;
        return;
      }
      if (p === 0) this._sgr0();
      else if ((p >= 30 && p <= 37) || (p >= 90 && p <= 97)) this.cur.fg = true;
      else if ((p >= 40 && p <= 47) || (p >= 100 && p <= 107)) this.cur.bg = true;
      else if (p === 39) this.cur.fg = false;
      else if (p === 49) this.cur.bg = false;
      else if (F[p]) this.cur.flags |= F[p];
      else if (p === 22) this.cur.flags &= ~(F[1] | F[2]);
      else if (p === 23) this.cur.flags &= ~F[3];
      else if (p === 25) this.cur.flags &= ~F[5];
      else if (p === 27) this.cur.flags &= ~F[7];
      else if (p === 28) this.cur.flags &= ~F[8];
      else if (p === 29) this.cur.flags &= ~F[9];
      else if (p === 55) this.cur.flags &= ~F[53];
      else if (p === 4 || p === 21 || p === 24) {
        let style = p === 4 ? 1 : p === 21 ? 2 : 0;
        if (p === 4 && sub) {
          style = sub[0];
          if (style === -1 || style > 5 || typeof style !== "number") style = 1;
          i += 1;
        }
        this.underline = style;
        if (style === 0) this.cur.flags &= ~AttrTracker.UNDERLINE;
        else this.cur.flags |= AttrTracker.UNDERLINE;
        this._updateExt();
      } else if (p === 38 || p === 48 || p === 58) {
        let taken;
        if (sub) taken = 1;
        else if (list[i + 1] === 5 && typeof list[i + 2] === "number" && !Array.isArray(list[i + 3])) taken = 2;
        else if (list[i + 1] === 2 && [2, 3, 4].every((k) => typeof list[i + k] === "number")
          && typeof list[i + 4] === "number" && !Array.isArray(list[i + 5])) taken = 4;
        else {
          this.unknown = true; // a colour form whose reading we do not mirror
          return;
        }
        if (p === 38) this.cur.fg = true;
        else if (p === 48) this.cur.bg = true;
        // 58, the underline colour, leaves HAS_EXTENDED alone in xterm 5.5
        i += taken;
      } else if (p === 59) {
        this._updateExt(); // xterm recomputes HAS_EXTENDED here (58 does not)
      }
      // xterm ignores other parameters
    }
  }

  /** DECSC (`ESC 7`, `CSI s`, DECSET 1048/1049) on the buffer `which`. */
  save(which) {
    this.saved[which] = { ...this.cur };
    this.saved[which].unknown = this.unknown;
  }

  /** DECRC (`ESC 8`, `CSI u`, DECRST 1048/1049) from the buffer `which`: fg and bg words only. */
  restore(which) {
    const s = this.saved[which];
    this.cur = { fg: s.fg, bg: s.bg, flags: s.flags, ext: s.ext };
    this.unknown = !!s.unknown;
  }

  /** DECSTR (`CSI ! p`): defaults, and the active buffer's saved cursor too. */
  softReset(which) {
    this.cur = AttrTracker.plain();
    this.unknown = false;
    this.url = false;
    this.underline = 0;
    this.saved[which] = AttrTracker.plain();
  }

  /** DECSCA (`CSI Ps " q`). */
  protect(p) {
    if (p === 1) this.cur.flags |= AttrTracker.PROTECTED;
    else if (p === 0 || p === 2 || p === undefined) this.cur.flags &= ~AttrTracker.PROTECTED;
  }

  /** OSC 8 (`ESC ] 8 ; params ; uri ST`): a link opened or closed. */
  hyperlink(data) {
    const args = data.split(";");
    if (args.length < 2) return;
    if (args[1]) this.url = true;
    else if (args[0]) return;
    else this.url = false;
    this._updateExt();
  }
}

/** Flag bits set by SGR parameters (any distinct bits: only "none set" matters). */
AttrTracker.FLAGS = Object.freeze({ 1: 1, 2: 2, 3: 4, 5: 8, 7: 16, 8: 32, 9: 64, 53: 128 });
AttrTracker.UNDERLINE = 256;
AttrTracker.PROTECTED = 512;

// -- The prediction core --------------------------------------------------------------

/**
 * `screen`, the terminal as the predictor sees it (termio.js builds it on xterm):
 *   cols                  the terminal's width
 *   cursor()              {x, y}: the cursor, y a row of the active screen
 *   cell(y, x)            {chars, width, plain}: chars "" for a cell never written,
 *                         plain: default attributes
 *   alternate             the alternate screen is active
 *   mayDraw               writing a prediction now is safe (see the top of this file)
 *
 * Every call is made with xterm idle: all that was written has been parsed.
 */
export class Predictor {
  constructor({ now = () => performance.now(), minTimeout = 1000, maxTimeout = 5000, stats = null } = {}) {
    this.now = now;
    this.minTimeout = minTimeout;
    this.maxTimeout = maxTimeout;
    this.stats = stats || Predictor.newStats();
    this.run = null; // {row, col, keys: [{kind, char, at, drawn}], texts: [T_0..T_n], m, frozen, redraw, since}
    this.hold = { keys: [] }; // nothing is known about the echo yet: hold until it is seen
    this.tainted = false; // a run broke with keys unconfirmed: wait for the cursor to change lines
    this.drawn = null; // {row, col, text, cells: originals ("" or " ")}: what is on the screen now
    this.pre = null; // the server's cursor before the output being parsed
    this.latencies = []; // the last confirmations, ms from the key
  }

  static newStats() {
    return { keys: 0, predicted: 0, confirmed: 0, rolledBack: 0, rollbacks: 0, ended: 0 };
  }

  /** The timeout for a key's echo: twice the slowest recent echo, within [min, max]. */
  get timeout() {
    const slowest = this.latencies.length ? Math.max(...this.latencies) : 0;
    return Math.min(this.maxTimeout, Math.max(this.minTimeout, 2 * slowest));
  }

  /** When the oldest unconfirmed key times out (ms, `now`'s clock), or null. */
  get deadline() {
    const r = this.run;
    if (!r || r.m >= r.keys.length) return null;
    return Math.max(r.since, r.keys[r.m].at) + this.timeout;
  }

  /** A key typed; `boundary`: not the user's typing at this line (a paste, a button). */
  key(data, screen, { boundary = false } = {}) {
    const k = boundary ? { kind: "other" } : classifyKey(data);
    if (k.kind === "char") this.stats.keys += 1;
    if (screen.alternate) {
      this._end("ended");
      this.hold = { keys: [] };
      return this._render(screen);
    }
    const r = this.run;
    if (r && !r.frozen) {
      const text = r.texts[r.texts.length - 1];
      if (k.kind === "char" && r.col + text.length + 1 <= screen.cols - 1) {
        this._push(r, { kind: "char", char: k.char }, text + k.char);
      } else if (k.kind === "erase" && text.length) {
        this._push(r, { kind: "erase" }, text.slice(0, -1));
      } else {
        r.frozen = true;
        r.redraw = true; // what is drawn stays until the server answers
        if (r.m === r.keys.length) this.run = null;
        this.hold = { keys: k.kind === "char" ? [{ char: k.char, at: this.now() }] : [] };
      }
    } else if (k.kind === "char") {
      this.hold.keys.push({ char: k.char, at: this.now() });
    } else {
      this.hold.keys = [];
    }
    return this._render(screen);
  }

  /** Before the server's output is parsed: the sequence that takes every prediction back. */
  before(screen) {
    this.pre = this.drawn ? { x: this.drawn.col, y: this.drawn.row } : screen.cursor();
    return this._take(0);
  }

  /** After the server's output was parsed (nothing of ours on the screen): confirm, end, redraw. */
  after(screen) {
    const cur = screen.cursor();
    const pre = this.pre || cur;
    this.pre = null;
    if (screen.alternate) {
      this._end("ended");
      this.hold = { keys: [] };
      this.tainted = false;
      return "";
    }
    if (this.tainted && pre.y !== cur.y) this.tainted = false;
    let settled = false; // this output was the run's: it says nothing about the held keys
    const r = this.run;
    if (r) {
      const n = r.keys.length;
      let found = -1;
      if (cur.y === r.row) {
        for (let i = r.m; i <= n; i += 1) {
          if (r.col + r.texts[i].length === cur.x && this._shows(screen, r.row, r.col, r.texts[i])) {
            found = i;
            break;
          }
        }
      }
      if (found >= 0) {
        if (found > r.m) settled = true;
        // A frozen run is drawn again only while the server is seen working through
        // its keys: otherwise the key that froze it may have undone them (Ctrl-U).
        if (r.frozen) r.redraw = found > r.m;
        this._confirm(r, found);
        if (r.frozen && r.m === n) this.run = null;
      } else if (r.frozen && this._shows(screen, r.row, r.col, r.texts[n]) && cur.y === r.row) {
        // all echoed, and the key that froze the run did more (a completion)
        this._confirm(r, n);
        this.run = null;
        settled = true;
      } else if (r.frozen && cur.y !== r.row) {
        // the key that froze it (Enter) took the cursor to another line: the run is over
        this._end("ended");
        settled = true;
      } else {
        // Something else happened to the line. Keys still unconfirmed may yet be
        // echoed, anywhere: no anchoring on an echo until the cursor changes lines.
        if (r.m < n) this.tainted = true;
        this._end(r.frozen ? "ended" : "rollback");
      }
    }
    if (!this.run && this.hold && !settled && !this.tainted) this._anchor(screen, pre, cur);
    return this._expire() + this._render(screen);
  }

  /** The clock moved on (termio.js calls it at `deadline`). */
  tick(screen) {
    return this._expire() + this._render(screen);
  }

  /** Take every prediction back and start over holding (prediction turned off, a resize). */
  clear() {
    const undo = this._take(0);
    this._end("ended");
    this.hold = { keys: [] };
    this.tainted = false;
    return undo;
  }

  /** The terminal was reset: nothing of ours is on it any more. */
  reset() {
    this.drawn = null;
    this._end("ended");
    this.hold = { keys: [] };
    this.tainted = false;
    this.pre = null;
  }

  // -- inside --------------------------------------------------------------------------

  _push(r, key, text) {
    key.at = this.now();
    key.drawn = false;
    r.keys.push(key);
    r.texts.push(text);
  }

  /**
   * The first held keys were seen echoed by this output: a run starts, anchored
   * before them, and the keys typed after them are drawn. The output must have
   * printed them (the cursor moved right on its line, by no more than they
   * span) and the cells left of the cursor must spell them; the fewest keys that
   * fit are taken (the least progress claimed).
   */
  _anchor(screen, pre, cur) {
    const held = this.hold.keys;
    const printed = cur.x - pre.x;
    if (!held.length || pre.y !== cur.y || printed < 1) return;
    for (let j = printed; j <= held.length && cur.x - j >= 0; j += 1) {
      const col = cur.x - j;
      if (!this._shows(screen, cur.y, col, held.slice(0, j).map((k) => k.char).join(""))) continue;
      const texts = [""];
      for (const k of held) texts.push(texts[texts.length - 1] + k.char);
      if (col + texts[texts.length - 1].length > screen.cols - 1) return;
      this.run = {
        row: cur.y,
        col,
        keys: held.map((k) => ({ kind: "char", char: k.char, at: k.at, drawn: false })),
        texts,
        m: 0,
        frozen: false,
        since: this.now(),
      };
      this._confirm(this.run, j);
      this.hold = null;
      return;
    }
  }

  _confirm(r, upTo) {
    const at = this.now();
    for (let i = r.m; i < upTo; i += 1) {
      const key = r.keys[i];
      if (key.drawn) {
        this.stats.confirmed += 1;
        this.latencies.push(at - key.at);
        if (this.latencies.length > 20) this.latencies.shift();
      }
    }
    if (upTo > r.m) r.since = at;
    r.m = upTo;
  }

  /** The run ends; its drawn, unconfirmed keys count as `how` ("rollback" or "ended"). */
  _end(how) {
    const r = this.run;
    if (!r) return;
    let lost = 0;
    for (let i = r.m; i < r.keys.length; i += 1) if (r.keys[i].drawn && r.keys[i].kind === "char") lost += 1;
    if (how === "rollback") {
      this.stats.rolledBack += lost;
      if (lost) this.stats.rollbacks += 1;
    } else {
      this.stats.ended += lost;
    }
    this.run = null;
    if (!this.hold) this.hold = { keys: [] };
  }

  _expire() {
    const d = this.deadline;
    if (d === null || this.now() < d) return "";
    this._end("rollback");
    this.tainted = true;
    return "";
  }

  /** The screen shows `text` at (row, col), one cell per character. */
  _shows(screen, row, col, text) {
    if (col < 0 || col + text.length > screen.cols) return false;
    for (let j = 0; j < text.length; j += 1) {
      const cell = screen.cell(row, col + j);
      if (!cell || cell.width !== 1 || cell.chars !== text[j]) return false;
    }
    return true;
  }

  /** What should be drawn now: {row, col, text, cells} or null. */
  _wanted(screen) {
    const r = this.run;
    if (!r || (r.frozen && !r.redraw) || screen.alternate || !screen.mayDraw) return null;
    const n = r.keys.length;
    const done = r.texts[r.m];
    const all = r.texts[n];
    if (n === r.m || all.length <= done.length || !all.startsWith(done)) return null;
    const server = this.drawn ? { x: this.drawn.col, y: this.drawn.row } : screen.cursor();
    const col = r.col + done.length;
    if (server.y !== r.row || server.x !== col || r.col + all.length > screen.cols - 1) return null;
    // Every cell from the cursor to the margin blank in the server's screen.
    const cells = [];
    for (let x = col; x < screen.cols; x += 1) {
      const d = this.drawn;
      let original;
      if (d && x >= d.col && x < d.col + d.cells.length) original = d.cells[x - d.col];
      else {
        const cell = screen.cell(r.row, x);
        original = cell && cell.width === 1 && cell.plain && (cell.chars === "" || cell.chars === " ") ? cell.chars : null;
      }
      if (original === null) return null;
      cells.push(original);
    }
    const text = all.slice(done.length);
    return { row: r.row, col, text, cells: cells.slice(0, text.length) };
  }

  /** Bring the screen from `drawn` to what is wanted; the sequence to write. */
  _render(screen) {
    const want = this._wanted(screen);
    const have = this.drawn;
    let out = "";
    let keep = 0;
    if (have && want && have.row === want.row && have.col === want.col) {
      while (keep < have.text.length && keep < want.text.length && have.text[keep] === want.text[keep]) keep += 1;
    }
    if (have) out += this._take(keep);
    if (want && want.text.length > keep) {
      out += STYLE.on + want.text.slice(keep) + STYLE.off;
      this.drawn = { ...want };
      this._markDrawn();
    } else if (want && keep) {
      this.drawn = { ...want, text: want.text.slice(0, keep), cells: want.cells.slice(0, keep) };
    }
    return out;
  }

  /** The run's keys whose characters are on the screen now count as predicted (once each). */
  _markDrawn() {
    const r = this.run;
    const base = r.texts[r.m].length;
    let shortest = Infinity; // the shortest text after key i: below its length, a Backspace took key i's character
    for (let i = r.keys.length - 1; i >= r.m; i -= 1) {
      shortest = Math.min(shortest, r.texts[i + 1].length);
      const key = r.keys[i];
      if (key.kind === "char" && !key.drawn && shortest >= r.texts[i + 1].length && r.texts[i].length >= base) {
        key.drawn = true;
        this.stats.predicted += 1;
      }
    }
  }

  /** Take back what is drawn beyond its first `keep` characters; the cursor ends after them. */
  _take(keep) {
    const d = this.drawn;
    if (!d) return "";
    const k = d.text.length - keep;
    if (k <= 0) return "";
    const cells = d.cells.slice(keep);
    let out = `${CSI}${k}D${CSI}${k}X`;
    let pos = 0;
    cells.forEach((original, i) => {
      if (original !== " ") return;
      if (i > pos) out += `${CSI}${i - pos}C`;
      out += " ";
      pos = i + 1;
    });
    if (pos > 0) out += `${CSI}${pos}D`;
    this.drawn = keep ? { ...d, text: d.text.slice(0, keep), cells: d.cells.slice(0, keep) } : null;
    return out;
  }
}
