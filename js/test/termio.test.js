// TerminalIO against the real xterm.js parser (it runs in node without a DOM):
// replayed queries are never answered, live ones are, keystrokes always go through.
import assert from "node:assert/strict";
import { test } from "node:test";

import xterm from "@xterm/xterm";

import { QUERIES, TerminalIO } from "../src/termio.js";
import { prng } from "./fake.js";

const { Terminal } = xterm;

function newTerminal() {
  const term = new Terminal({
    cols: 80, rows: 24, allowProposedApi: true,
    windowOptions: { getWinSizeChars: true, getCellSizePixels: true },
  });
  // Colour reports come from xterm's theme service, which exists only once a
  // terminal is opened in a page: answer as it does, synchronously from the parse.
  for (const ident of [4, 10, 11, 12]) {
    term.parser.registerOscHandler(ident, (data) => {
      if (data.endsWith("?")) term.input(`\x1b]${ident};${data.replace(/\?$/, "rgb:1a1a/1a1a/1a1a")}\x1b\\`, false);
      return false;
    });
  }
  return term;
}

function setup() {
  const term = newTerminal();
  const sent = [];
  const io = new TerminalIO(term, { onInput: (data) => sent.push(data) });
  const write = (text, replay) => new Promise((resolve) => io.write(text, { replay }, resolve));
  return { term, io, sent, write };
}

const KEY = "\u00a7"; // no answer of xterm's contains it

/** Queries xterm 5.5 answers, one per hooked family where it answers at all. */
const ASKED = {
  "cursor position (DSR 6)": "\x1b[6n",
  "status (DSR 5)": "\x1b[5n",
  "DECDSR cursor position": "\x1b[?6n",
  "primary device attributes": "\x1b[c",
  "secondary device attributes": "\x1b[>c",
  "foreground colour (OSC 10)": "\x1b]10;?\x07",
  "background colour (OSC 11)": "\x1b]11;?\x1b\\",
  "cursor colour (OSC 12)": "\x1b]12;?\x07",
  "palette colour (OSC 4)": "\x1b]4;1;?\x07",
  "private mode (DECRQM)": "\x1b[?2026$p",
  "ANSI mode (DECRQM)": "\x1b[4$p",
  "status string (DECRQSS)": "\x1bP$qm\x1b\\",
  "text area size (XTWINOPS 18)": "\x1b[18t",
  "focus reporting on (DECSET 1004)": "\x1b[?1004h",
};

test("every query xterm answers is answered live and held back in replay", async () => {
  for (const [name, query] of Object.entries(ASKED)) {
    const { io, sent, write } = setup();
    await write(`before ${query} after\r\n`, true);
    assert.deepEqual(sent, [], `${name}: answered in replay`);
    await write(`live ${query}\r\n`, false);
    assert.ok(sent.length >= 1, `${name}: not answered live (so this test checks nothing)`);
    io.dispose();
  }
});

test("replayed output still sets modes: only the answers are held back", async () => {
  const { term, sent, write } = setup();
  await write("\x1b[?1049h\x1b[?2004h\x1b[?1h\x1b[6n", true);
  assert.equal(term.buffer.active.type, "alternate");
  assert.equal(term.modes.bracketedPasteMode, true);
  assert.equal(term.modes.applicationCursorKeysMode, true);
  assert.deepEqual(sent, []);
});

test("a query that starts in replay and ends live is answered once; one that ends in replay never", async () => {
  let { sent, write } = setup();
  await write("abc\x1b[6", true);
  await write("n", false);
  assert.deepEqual(sent, ["\x1b[1;4R"]);

  ({ sent, write } = setup());
  await write("\x1b]11;", true);
  await write("?\x07", false);
  assert.equal(sent.length, 1);
  assert.match(sent[0], /^\x1b\]11;rgb:/);

  ({ sent, write } = setup());
  await write("\x1b[6n", true);
  await write("more", false);
  assert.deepEqual(sent, []);
});

test("keystrokes typed while replayed output is being parsed go through, in order", async () => {
  const { io, sent, write } = setup();
  const history = `${"output line with a query \x1b[6n and \x1b[c\r\n".repeat(40000)}`;
  const drawn = write(history, true);
  const typed = [];
  let duringReplay = 0;
  while (io.replaying) {
    const key = `${KEY}${typed.length}`;
    typed.push(key);
    io.term.input(key, true); // what a keydown does
    if (io.replaying) duringReplay += 1;
    await new Promise((resolve) => setTimeout(resolve, 0));
  }
  await drawn;
  assert.ok(duringReplay >= 3, `only ${duringReplay} keys fell inside the replay: it is not tested`);
  assert.deepEqual(sent, typed);
});

test("an empty write calls back at once", async () => {
  const { io } = setup();
  let called = false;
  io.write("", { replay: true }, () => { called = true; });
  assert.equal(called, true);
});

test("property: random history with queries cut anywhere, keystrokes between writes: "
  + "input is the keystrokes and exactly the answers xterm gives to the live part", async () => {
  const tokens = [...Object.values(ASKED), "plain text ", "\r\n", "\x1b[31mred\x1b[0m", "é😀", "\x1b[2J\x1b[H", "\x1b]0;title\x07"];
  for (let seed = 1; seed <= 60; seed += 1) {
    const rand = prng(seed);
    let stream = "";
    for (let i = 0, n = 5 + Math.floor(rand() * 40); i < n; i += 1) stream += tokens[Math.floor(rand() * tokens.length)];
    let boundary = Math.floor(rand() * (stream.length + 1));
    if (/[\ud800-\udbff]/.test(stream[boundary - 1] ?? "")) boundary += 1; // pieces are whole characters
    const [history, live] = [stream.slice(0, boundary), stream.slice(boundary)];

    // The reference: plain xterm, all of the history parsed before the live part is written.
    const reference = newTerminal();
    const answers = [];
    await new Promise((resolve) => reference.write(history, resolve));
    reference.onData((data) => answers.push(data));
    await new Promise((resolve) => reference.write(live, resolve));

    const { term, io, sent } = setup();
    const typed = [];
    const writes = [];
    const cut = (text, replay) => {
      for (let at = 0; at < text.length;) {
        let end = Math.min(text.length, at + 1 + Math.floor(rand() * 12));
        if (/[\ud800-\udbff]/.test(text[end - 1])) end += 1;
        const part = text.slice(at, end);
        writes.push(new Promise((resolve) => io.write(part, { replay }, resolve)));
        at = end;
        if (rand() < 0.3) {
          const key = `${KEY}${typed.length}`;
          typed.push(key);
          setTimeout(() => term.input(key, true), 0);
        }
      }
    };
    cut(history, true);
    cut(live, false);
    await Promise.all(writes);
    await new Promise((resolve) => setTimeout(resolve, 5));
    assert.deepEqual(sent.filter((d) => d.startsWith(KEY)), typed, `seed ${seed}: keystrokes`);
    assert.deepEqual(sent.filter((d) => !d.startsWith(KEY)), answers,
      `seed ${seed}: answers (boundary ${boundary} of ${JSON.stringify(stream)})`);
    io.dispose();
  }
});

test("the hooks cover xterm's answering handlers and are removed on dispose", () => {
  const { term, io } = setup();
  assert.ok(QUERIES.csi.length && QUERIES.osc.length && QUERIES.dcs.length);
  io.dispose();
  assert.deepEqual(io.subscriptions, []);
  term.dispose();
});
