// Unit tests of the page's output stream (PageStream) and of terminals reading on it,
// against a fake server with several sessions and a stream (FakeHub, test/fake.js).
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  Api, PageStream, PollBudget, SessionTransport, SseParser, fallbackKey,
} from "../src/transport.js";
import { FakeHub, FakeTimers, prng, settle } from "./fake.js";

class MemoryStorage {
  constructor() {
    this.items = new Map();
  }

  getItem(key) {
    return this.items.get(key) ?? null;
  }

  setItem(key, value) {
    this.items.set(key, String(value));
  }
}

/** A page: one stream, and a terminal per session, each drawing as told. */
function page({ hub = new FakeHub(), random = () => 0.5, drawLater = false, storage = new MemoryStorage(),
  openTimeout = 4000 } = {}) {
  const timers = new FakeTimers();
  const api = new Api({ baseUrl: "/user/x/", http: hub.http, timers, xsrf: () => "xsrf-1" });
  const stream = new PageStream({ api, open: hub.stream, timers, random, storage, openTimeout, now: timers.now });
  const budget = new PollBudget(3);
  const terminals = new Map();
  const add = (sessionId, clientId = `view-${sessionId}`) => {
    const term = { shown: [], states: [], pendingDraws: [] };
    term.transport = new SessionTransport({
      api, sessionId, clientId, timers, random, now: timers.now, budget, stream, liveFrom: 0,
      onOutput: (data, done) => {
        term.shown.push(data);
        if (drawLater) term.pendingDraws.push(done);
        else done();
      },
      onState: (s) => term.states.push(s),
    });
    term.text = () => term.shown.join("");
    term.drawAll = () => {
      while (term.pendingDraws.length) term.pendingDraws.shift()();
    };
    terminals.set(clientId, term);
    return term;
  };
  return { hub, timers, api, stream, budget, storage, terminals, add };
}

const waits = (hub) => hub.polls.map((r) => new URL(r.url, "http://x").searchParams.get("wait"));

test("events are parsed whole from text cut anywhere, comments apart", () => {
  const got = [];
  const parser = new SseParser((name, data) => got.push([name, data]));
  const text = 'event: open\ndata: {"a":1}\n\n: keep-alive\n\nevent: output\r\ndata: {"b":"x\\ny"}\n\ndata: plain\n\n';
  for (let i = 0; i < text.length; i += 3) parser.feed(text.slice(i, i + 3));
  assert.deepEqual(got, [
    ["open", '{"a":1}'], ["comment", " keep-alive"], ["output", '{"b":"x\\ny"}'], ["message", "plain"],
  ]);
});

test("the terminals of a page share one stream: each gets its own output, and nobody polls", async () => {
  const p = page({ hub: new FakeHub({ sessions: ["s1", "s2", "s3", "s4"] }) });
  const terms = ["s1", "s2", "s3", "s4"].map((id) => p.add(id));
  for (const term of terms) term.transport.start();
  await p.timers.advance(10);
  for (const id of ["s1", "s2", "s3", "s4"]) p.hub.session(id).append(`out-${id} `);
  await p.timers.advance(10);
  terms.forEach((term, i) => assert.equal(term.text(), `out-s${i + 1} `));
  for (const term of terms) assert.equal(term.transport.state.name, "connected");
  // The four subscriptions came within one turn: one stream carries them all.
  assert.equal(p.hub.streamRequests.length, 1);
  assert.equal(p.hub.streamRequests[0].reads.length, 4);
  assert.equal(p.hub.polls.length, 0);
  // Typing and its echo, then a minute of quiet: no request but the POSTs.
  const before = p.hub.requests.length;
  terms[3].transport.send("k");
  await p.timers.advance(10);
  p.hub.session("s4").append("k");
  for (let i = 0; i < 6; i += 1) {
    p.hub.heartbeatAll(); // the server's, every 15 s of nothing else
    await p.timers.advance(10000);
  }
  assert.equal(terms[3].text(), "out-s4 k");
  assert.deepEqual(p.hub.requests.slice(before).map((r) => r.method + " " + r.url), ["POST /user/x/api/ws/message"]);
  assert.equal(p.budget.used, 0, "no long-poll slot is taken");
  for (const term of terms) term.transport.dispose();
});

test("a flood never runs more than a window ahead of what the page has drawn, and all of it arrives", async () => {
  const hub = new FakeHub({ sessions: ["s1", "s2"], window: 100 });
  const p = page({ hub, drawLater: true });
  const flood = p.add("s1");
  const quiet = p.add("s2");
  flood.transport.start();
  quiet.transport.start();
  await p.timers.advance(10);
  const text = "y\n".repeat(5000);
  hub.session("s1").append(text);
  await p.timers.advance(10);
  assert.ok(flood.text().length <= 100, "one window, then the stream waits for the page");
  assert.equal(hub.maxUnwritten, 100);
  // Meanwhile the other terminal's echo comes through at once.
  hub.session("s2").append("echo");
  await p.timers.advance(10);
  assert.equal(quiet.text(), "echo");
  quiet.drawAll();
  // The page draws slowly; acknowledgements let the rest through, a window at a time.
  for (let i = 0; i < 1000 && flood.text().length < text.length; i += 1) {
    if (flood.pendingDraws.length) flood.pendingDraws.shift()();
    await p.timers.advance(1);
  }
  assert.equal(flood.text(), text);
  assert.ok(hub.maxUnwritten <= 100, `${hub.maxUnwritten} characters unwritten`);
  // Acknowledgements go a quarter window at a time, not per event.
  assert.ok(hub.acks.length <= text.length / 25 + 2, `${hub.acks.length} acknowledgements`);
  assert.equal(hub.polls.length, 0);
});

test("behind a proxy that buffers, no event comes: the page falls back to long polls and remembers", async () => {
  const hub = new FakeHub({ sessions: ["s1", "s2"] });
  hub.streamFaults.push("buffer");
  const p = page({ hub });
  const a = p.add("s1");
  a.transport.start();
  hub.session("s1").append("early ");
  await p.timers.advance(3000);
  assert.equal(a.text(), "", "nothing came through yet");
  await p.timers.advance(1500);
  assert.equal(a.text(), "early ", "read by a long poll after the fallback");
  assert.equal(p.stream.usable, false);
  assert.equal(p.storage.getItem(fallbackKey("/user/x/")), "polls");
  hub.session("s1").append("late");
  await p.timers.advance(10);
  assert.equal(a.text(), "early late");
  assert.equal(a.transport.state.name, "connected");
  // A terminal added later does not try the stream again, nor does the next page.
  const b = p.add("s2");
  b.transport.start();
  hub.session("s2").append("b");
  await p.timers.advance(10);
  assert.equal(b.text(), "b");
  assert.equal(hub.streamRequests.length, 1);
  const next = page({ hub, storage: p.storage });
  const c = next.add("s1", "view-next");
  c.transport.start();
  await next.timers.advance(10);
  assert.equal(hub.streamRequests.length, 1);
  assert.equal(c.text(), "early late");
  for (const t of [a, b, c]) t.transport.dispose();
});

test("a server without the stream (404), a page that is not a stream, or a full server: long polls", async () => {
  for (const [fault, remembered] of [[404, true], ["html", true], [429, false]]) {
    const hub = new FakeHub();
    hub.streamFaults.push(fault);
    const p = page({ hub });
    const a = p.add("s1");
    a.transport.start();
    hub.session("s1").append("x");
    await p.timers.advance(100);
    assert.equal(a.text(), "x", `${fault}`);
    assert.equal(p.stream.usable, false);
    assert.equal(p.storage.getItem(fallbackKey("/user/x/")) === "polls", remembered, `${fault}`);
    a.transport.dispose();
  }
});

test("a stream cut by the network is opened again from each terminal's offset, after a backoff", async () => {
  const hub = new FakeHub({ sessions: ["s1", "s2"] });
  const p = page({ hub });
  const a = p.add("s1");
  const b = p.add("s2");
  a.transport.start();
  b.transport.start();
  await p.timers.advance(10);
  hub.session("s1").append("one ");
  await p.timers.advance(10);
  hub.streamFaults.push("network", 502);
  hub.cutStreams();
  hub.session("s1").append("two ");
  hub.session("s2").append("b");
  await p.timers.advance(10);
  assert.equal(a.transport.state.name, "reconnecting");
  await p.timers.advance(5000);
  assert.equal(a.text(), "one two ");
  assert.equal(b.text(), "b");
  assert.equal(a.transport.state.name, "connected");
  const last = hub.streamRequests.at(-1).reads;
  assert.deepEqual(last.map((r) => [r.sessionId, r.offset]), [["s1", 4], ["s2", 0]]);
  assert.equal(hub.streamRequests.length, 4);
  assert.equal(p.stream.usable, true, "errors are retried, not a reason to fall back");
  a.transport.dispose();
  b.transport.dispose();
});

test("a stream the server closes (its lifetime) is opened again at once, losing nothing", async () => {
  const hub = new FakeHub();
  const p = page({ hub });
  const a = p.add("s1");
  a.transport.start();
  await p.timers.advance(10);
  hub.session("s1").append("before ");
  hub.closeStreams();
  hub.session("s1").append("after");
  await p.timers.advance(1);
  assert.equal(a.text(), "before after");
  assert.equal(hub.streamRequests.length, 2);
  assert.ok(!a.states.some((s) => s.name === "reconnecting"));
  a.transport.dispose();
});

test("a stream that goes silent past its heartbeat is opened again; twice in a row, the page falls back", async () => {
  const hub = new FakeHub({ heartbeat: 1 });
  const p = page({ hub });
  const a = p.add("s1");
  a.transport.start();
  await p.timers.advance(10);
  // Heartbeats keep it: nothing happens for a minute.
  for (let i = 0; i < 60; i += 1) {
    hub.heartbeatAll();
    await p.timers.advance(1000);
  }
  assert.equal(hub.streamRequests.length, 1);
  // Silence: a proxy has started holding the stream back.
  hub.streamFaults.push("buffer");
  await p.timers.advance(8000);
  assert.equal(hub.streamRequests.length, 2);
  assert.equal(p.stream.usable, true);
  await p.timers.advance(8000);
  assert.equal(p.stream.usable, false, "the second stream brought nothing either");
  hub.session("s1").append("polled");
  await p.timers.advance(100);
  assert.equal(a.text(), "polled");
  a.transport.dispose();
});

test("a session that ends shows ended after all its output; an unknown one not_found; the others go on", async () => {
  const hub = new FakeHub({ sessions: ["s1", "s2"] });
  const p = page({ hub, drawLater: true });
  const a = p.add("s1");
  const b = p.add("s2");
  const gone = p.add("nope");
  for (const t of [a, b, gone]) t.transport.start();
  await p.timers.advance(10);
  assert.equal(gone.transport.state.name, "not_found");
  hub.session("s1").append("bye");
  hub.session("s1").end("exited", 3);
  await p.timers.advance(10);
  assert.equal(a.transport.state.name, "connected", "not before its output is drawn");
  a.drawAll();
  await p.timers.advance(10);
  assert.deepEqual(a.transport.state, { name: "ended", attempt: 0, exitCode: 3, message: "", status: "exited" });
  hub.session("s2").append("still");
  await p.timers.advance(10);
  b.drawAll();
  assert.equal(b.text(), "still");
  assert.equal(hub.polls.length, 0);
  b.transport.dispose();
});

test("a 403 on the stream is final for every terminal on it, with no retry storm", async () => {
  const hub = new FakeHub({ sessions: ["s1", "s2"] });
  hub.streamFaults.push(403);
  const p = page({ hub });
  const a = p.add("s1");
  const b = p.add("s2");
  a.transport.start();
  b.transport.start();
  await p.timers.advance(60000);
  assert.equal(a.transport.state.name, "forbidden");
  assert.equal(b.transport.state.name, "forbidden");
  assert.equal(hub.streamRequests.length, 1);
});

test("a terminal that goes away leaves the stream; with none left there is no stream", async () => {
  const hub = new FakeHub({ sessions: ["s1", "s2"] });
  const p = page({ hub });
  const a = p.add("s1");
  const b = p.add("s2");
  a.transport.start();
  await p.timers.advance(10);
  b.transport.start();
  await p.timers.advance(10);
  assert.deepEqual(hub.streamRequests.map((r) => r.reads.length), [1, 2]);
  a.transport.dispose();
  await p.timers.advance(10);
  assert.deepEqual(hub.streamRequests.at(-1).reads.map((r) => r.sessionId), ["s2"]);
  b.transport.dispose();
  await p.timers.advance(60000);
  assert.equal(hub.open.size, 0);
  assert.equal(hub.streamRequests.length, 3);
});

test("over the long-poll budget nobody polls with wait=0 while the stream carries the page", async () => {
  const ids = ["s1", "s2", "s3", "s4", "s5"];
  const p = page({ hub: new FakeHub({ sessions: ids }) });
  const terms = ids.map((id) => p.add(id));
  for (const term of terms) term.transport.start();
  await p.timers.advance(30000);
  assert.deepEqual(waits(p.hub), []);
  // After a fallback the budget is back in force: three long polls, the others poll.
  p.hub.streamFaults.push("html");
  p.hub.closeStreams();
  await p.timers.advance(100);
  assert.equal(p.stream.usable, false);
  assert.equal(p.budget.used, 3);
  for (const term of terms) term.transport.dispose();
});

test("property: under cut streams, closes, errors and slow drawing, every terminal shows each byte once, in order", async () => {
  for (let seed = 1; seed <= 40; seed += 1) {
    const rand = prng(seed);
    const ids = ["s1", "s2", "s3"];
    const hub = new FakeHub({ sessions: ids, window: 5 + Math.floor(rand() * 40), max: 1 + Math.floor(rand() * 9) });
    const p = page({ hub, random: rand, drawLater: true });
    const terms = ids.map((id) => p.add(id));
    for (const term of terms) term.transport.start();
    for (let step = 0; step < 80; step += 1) {
      const r = rand();
      const id = ids[Math.floor(rand() * ids.length)];
      if (r < 0.35) hub.session(id).append(`<${seed}.${step}>`);
      else if (r < 0.45) {
        hub.streamFaults.push(rand() < 0.5 ? "network" : 502);
        hub.cutStreams();
      } else if (r < 0.5) hub.closeStreams();
      else if (r < 0.55) hub.session(id).fault("network");
      else {
        const term = terms[Math.floor(rand() * terms.length)];
        if (term.pendingDraws.length) term.pendingDraws.shift()();
      }
      await p.timers.advance(Math.floor(rand() * 2000));
    }
    for (let i = 0; i < 300 && terms.some((t, k) => t.text() !== hub.session(ids[k]).output); i += 1) {
      for (const term of terms) term.drawAll();
      await p.timers.advance(1000);
    }
    terms.forEach((term, k) => assert.equal(term.text(), hub.session(ids[k]).output, `seed ${seed}: ${ids[k]}`));
    assert.ok(hub.maxUnwritten <= hub.window * 2, `seed ${seed}: ${hub.maxUnwritten} unwritten`);
    assert.equal(p.stream.usable, true, `seed ${seed}`);
    for (const term of terms) term.transport.dispose();
  }
});
