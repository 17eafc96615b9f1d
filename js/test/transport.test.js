// Unit tests of the browser transport against a fake server (node --test).
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  Api, MAX_INPUT_CHARS, PollBudget, SessionTransport, backoffDelay, pieces, xsrfFromCookie,
} from "../src/transport.js";
import { FakeServer, FakeTimers, prng, settle } from "./fake.js";

/** A transport on a fake server; output is collected as the terminal would draw it. */
function setup({ server = new FakeServer(), budget, random = () => 0.5, drawLater = false, liveFrom = 0, ...rest } = {}) {
  const timers = new FakeTimers();
  const api = new Api({ baseUrl: "/user/x/", http: server.http, timers, xsrf: () => "xsrf-1" });
  const shown = [];
  const replayed = []; // whether each answer in `shown` was history
  const states = [];
  const pendingDraws = [];
  const transport = new SessionTransport({
    api, sessionId: "s1", clientId: "view-1", timers, random, now: timers.now,
    budget: budget ?? new PollBudget(Infinity),
    liveFrom,
    onOutput: (data, done, { replay }) => {
      shown.push(data);
      replayed.push(replay);
      if (drawLater) pendingDraws.push(done);
      else done();
    },
    onState: (s) => states.push(s),
    ...rest,
  });
  return { server, timers, api, transport, shown, replayed, states, pendingDraws };
}

const offsetsAsked = (server) => server.polls.map((r) => Number(new URL(r.url, "http://x").searchParams.get("offset")));

test("output is shown once, in order, across network errors: each retry asks for the same offset", async () => {
  const { server, timers, transport, shown, states } = setup();
  server.append("hello ");
  transport.start();
  await settle();
  assert.equal(shown.join(""), "hello ");
  // A proxy cuts the waiting long poll, the next two attempts fail, and the
  // program writes meanwhile.
  server.fault("network", 502);
  server.dropWaiting();
  server.append("world");
  await timers.advance(20000);
  server.append("!");
  await timers.advance(1000);
  assert.equal(shown.join(""), "hello world!");
  // Every retry asked again for the offset of the poll that failed.
  assert.deepEqual(offsetsAsked(server), [0, 6, 6, 6, 6, 11, 12]);
  assert.ok(states.some((s) => s.name === "reconnecting" && s.attempt === 3));
  assert.equal(transport.state.name, "connected");
  transport.dispose();
});

test("backoff after errors is exponential with jitter, capped, and resets after a success", async () => {
  assert.equal(backoffDelay(1, { random: () => 0 }), 125);
  assert.equal(backoffDelay(1, { random: () => 1 }), 250);
  assert.equal(backoffDelay(3, { random: () => 0 }), 500);
  assert.equal(backoffDelay(3, { random: () => 1 }), 1000);
  assert.equal(backoffDelay(30, { random: () => 1 }), 10000);
  for (let attempt = 1; attempt < 12; attempt += 1) {
    const d = backoffDelay(attempt);
    const ceiling = Math.min(10000, 250 * 2 ** (attempt - 1));
    assert.ok(d >= ceiling / 2 && d <= ceiling, `attempt ${attempt}: ${d}`);
  }

  const { server, timers, transport, states } = setup({ random: () => 1 });
  server.fault("network", "network", "network", "network");
  transport.start();
  await timers.advance(20000);
  const retryDelays = timers.scheduled.filter((d) => d !== 45000 && d !== 20000 && d !== 30000);
  assert.deepEqual(retryDelays.slice(0, 4), [250, 500, 1000, 2000]);
  assert.deepEqual(states.filter((s) => s.name === "reconnecting").map((s) => s.attempt), [1, 2, 3, 4]);
  assert.equal(transport.state.name, "connected");
  assert.equal(transport.readFailures, 0);
  transport.dispose();
});

test("an input POST whose answer was lost is sent again with the same seq, and written once", async () => {
  const { server, timers, transport } = setup();
  transport.start();
  await settle();
  server.fault("lost"); // the next request (this POST) is acted on, its answer lost
  transport.send("ls\r");
  await timers.advance(5000);
  assert.equal(server.posts.length, 2);
  assert.deepEqual(server.posts[0].body, server.posts[1].body);
  assert.equal(server.posts[0].body.seq, 1);
  assert.equal(server.posts[0].body.clientId, "view-1");
  assert.equal(server.written, "ls\r");
  transport.send("pwd\r");
  await timers.advance(100);
  assert.equal(server.posts[2].body.seq, 2);
  assert.equal(server.written, "ls\rpwd\r");
  transport.dispose();
});

test("input is retried through 5xx answers and proxies' HTML pages, without reordering", async () => {
  const { server, timers, transport } = setup();
  transport.start();
  await settle();
  server.fault(502, 503, "network");
  transport.send("a");
  transport.send("b");
  await settle();
  transport.send("c");
  await timers.advance(10000);
  assert.equal(server.written, "abc");
  transport.dispose();
});

test("keystrokes typed while a POST is in flight go out together in the next one", async () => {
  const server = new FakeServer();
  server.holdPosts = true;
  const { timers, transport } = setup({ server });
  transport.start();
  await settle();
  transport.send("e");
  await settle();
  for (const key of "cho hi\r") transport.send(key);
  await settle();
  assert.equal(server.posts.length, 1, "one POST in flight at a time");
  server.releasePosts();
  await settle();
  server.releasePosts();
  await timers.advance(100);
  assert.deepEqual(server.posts.map((p) => p.body.data), ["e", "cho hi\r"]);
  assert.equal(server.maxInflightPosts, 1);
  assert.equal(server.written, "echo hi\r");
  transport.dispose();
});

test("a long paste goes out whole and in order, in pieces under the body limit, surrogate pairs unsplit", async () => {
  const { server, timers, transport } = setup();
  transport.start();
  await settle();
  const paste = `${"x".repeat(MAX_INPUT_CHARS - 1)}😀${"ab\u0003".repeat(100000)}end`;
  transport.send(paste);
  await timers.advance(1000);
  assert.equal(server.written, paste);
  assert.ok(server.posts.length > 1);
  for (const post of server.posts) {
    assert.ok(post.body.data.length <= MAX_INPUT_CHARS);
    assert.ok(JSON.stringify(post.body).length < 64 * 1024);
    // Each piece is well-formed UTF-16: no lone surrogate at either end.
    assert.equal(post.body.data, post.body.data.toWellFormed());
  }
  assert.deepEqual(server.posts.map((p) => p.body.seq), server.posts.map((_, i) => i + 1));
  transport.dispose();
});

test("resizes are queued behind input and only the latest pending one is sent", async () => {
  const server = new FakeServer();
  server.holdPosts = true;
  const { timers, transport } = setup({ server });
  transport.start();
  await settle();
  transport.send("x");
  transport.resize(24, 80);
  transport.resize(30, 100);
  transport.send("y");
  for (let i = 0; i < 4; i += 1) {
    await settle();
    server.releasePosts();
  }
  await timers.advance(10);
  assert.deepEqual(server.messages.map((m) => m.type ?? m.data), ["x", "resize", "y"]);
  assert.equal(server.messages[1].rows, 30);
  assert.equal(server.messages[1].cols, 100);
  transport.dispose();
});

test("no output is requested while the terminal is still drawing the previous answer", async () => {
  const { server, transport, shown, pendingDraws } = setup({ drawLater: true });
  server.append("one");
  transport.start();
  await settle();
  server.append("two");
  await settle();
  assert.equal(server.polls.length, 1);
  assert.deepEqual(shown, ["one"]);
  pendingDraws.shift()();
  await settle();
  assert.equal(server.polls.length, 2);
  assert.deepEqual(shown, ["one", "two"]);
  pendingDraws.shift()();
  await settle();
  assert.equal(server.polls.length, 3, "then a long poll waits for more");
  transport.dispose();
});

test("after the first answer the reader long-polls; a confirmation poll comes first, with wait=0", async () => {
  const { server, transport } = setup();
  transport.start();
  await settle();
  const waits = server.polls.map((r) => new URL(r.url, "http://x").searchParams.get("wait"));
  assert.deepEqual(waits, ["0", "25"]);
  assert.match(server.polls[1].url, /^\/user\/x\/api\/ws\/output\/s1\?offset=0&wait=25&clientId=view-1$/);
  transport.dispose();
});

test("a session that ends shows ended with its exit code, after all its output, and polling stops", async () => {
  const { server, timers, transport, shown, states } = setup();
  transport.start();
  await settle();
  server.append("bye\r\n");
  server.end("exited", 3);
  await timers.advance(5000);
  assert.equal(shown.join(""), "bye\r\n");
  assert.deepEqual(states.at(-1), { name: "ended", attempt: 0, exitCode: 3, message: "", status: "exited" });
  const polls = server.polls.length;
  await timers.advance(60000);
  assert.equal(server.polls.length, polls);
  assert.equal(timers.pending.size, 0);
});

test("an expired session shows expired; an unknown one not_found; neither is retried", async () => {
  let { server, timers, transport } = setup();
  server.end("expired", null);
  transport.start();
  await timers.advance(1000);
  assert.equal(transport.state.name, "expired");

  ({ server, timers, transport } = setup());
  server.fault(404);
  transport.start();
  await timers.advance(60000);
  assert.equal(transport.state.name, "not_found");
  assert.equal(server.requests.length, 1);
});

test("401 and 403 answers show forbidden with no retry storm", async () => {
  for (const status of [401, 403]) {
    const { server, timers, transport } = setup();
    server.fault(status);
    transport.start();
    await timers.advance(120000);
    assert.equal(transport.state.name, "forbidden");
    assert.equal(server.requests.length, 1);
  }
  // A 403 on input (an expired XSRF cookie) stops too.
  const { server, timers, transport } = setup();
  transport.start();
  await settle();
  server.fault(403);
  transport.send("x");
  await timers.advance(120000);
  assert.equal(transport.state.name, "forbidden");
  assert.equal(server.posts.length, 1);
});

test("dispose aborts the poll in flight, cancels every timer and calls nothing back", async () => {
  const { server, timers, transport, states, shown } = setup();
  transport.start();
  await settle();
  server.fault("network");
  transport.send("x"); // fails: a retry timer is pending
  await settle();
  assert.ok(timers.pending.size > 0);
  const longPoll = server.polls.at(-1);
  assert.equal(longPoll.signal.aborted, false);
  const stateCount = states.length;
  transport.dispose();
  await settle();
  assert.equal(longPoll.signal.aborted, true);
  assert.equal(timers.pending.size, 0);
  server.append("late");
  await timers.advance(60000);
  assert.equal(states.length, stateCount);
  assert.deepEqual(shown, []);
  assert.equal(server.requests.length, 3);
});

test("over the page's long-poll budget a terminal polls with wait=0 on a timer, and at once after input", async () => {
  const budget = new PollBudget(1);
  const a = setup({ budget });
  const b = setup({ budget });
  a.transport.start();
  await settle();
  b.transport.start();
  await settle();
  const waitsOf = (s) => s.server.polls.map((r) => new URL(r.url, "http://x").searchParams.get("wait"));
  assert.deepEqual(waitsOf(a), ["0", "25"]);
  assert.deepEqual(waitsOf(b), ["0", "0"]);
  await b.timers.advance(1000);
  assert.deepEqual(waitsOf(b), ["0", "0", "0"]);
  a.transport.lastInput = b.timers.now(); // a is being typed into: it keeps its slot
  b.server.append("echo");
  b.transport.send("k");
  await b.timers.advance(10);
  assert.equal(b.shown.join(""), "echo", "the POST's answer kicked a poll at once");
  assert.equal(waitsOf(b).at(-1), "0");
  a.transport.dispose();
  assert.equal(budget.used, 0, "dispose gives the slot back");
  await b.timers.advance(200);
  assert.equal(waitsOf(b).at(-1), "25");
  b.transport.dispose();
});

test("a terminal typed into takes a long-poll slot from one that is not: no wait=0 loop while typing", async () => {
  const budget = new PollBudget(3);
  const terms = [1, 2, 3, 4].map(() => setup({ budget }));
  // All on one clock, as on one page.
  const timers = terms[0].timers;
  for (const t of terms) {
    t.transport.timers = timers;
    t.transport.api.timers = timers;
    t.transport.now = timers.now;
    t.transport.start();
    await settle();
  }
  const waitsOf = (t) => t.server.polls.map((r) => new URL(r.url, "http://x").searchParams.get("wait"));
  const fourth = terms[3];
  assert.deepEqual(waitsOf(fourth), ["0", "0"], "no slot left for the fourth");
  await timers.advance(10000); // the others are not typed into
  const before = fourth.server.polls.length;
  let typed = "";
  for (const key of "abcdefghijklmnopqrstuvwxyz".repeat(2).slice(0, 60)) {
    fourth.transport.send(key);
    await timers.advance(5);
    fourth.server.append(key); // the echo
    typed += key;
    await timers.advance(200);
    assert.equal(fourth.shown.join(""), typed);
  }
  const during = waitsOf(fourth).slice(before);
  assert.ok(during.filter((w) => w === "0").length <= 2, `wait=0 polls while typing: ${during}`);
  assert.equal(budget.used, 3);
  // The terminal that gave its slot up polls on a timer, and still shows its output.
  const robbed = terms.find((t) => waitsOf(t).at(-1) === "0" && t !== fourth);
  assert.ok(robbed, "one of the others gave its slot up");
  robbed.server.append("later");
  await timers.advance(1500);
  assert.equal(robbed.shown.join(""), "later");
  for (const t of terms) t.transport.dispose();
  assert.equal(budget.used, 0);
});

test("requests carry the XSRF cookie (GETs too, as JupyterHub wants), POSTs JSON; all stay under the base URL", async () => {
  assert.equal(xsrfFromCookie("a=1; _xsrf=2|ab|cd|99; b=2"), "2|ab|cd|99");
  assert.equal(xsrfFromCookie("foo_xsrf=1"), "");
  const { server, transport } = setup();
  transport.start();
  await settle();
  transport.send("x");
  await settle();
  const post = server.posts[0];
  assert.equal(post.url, "/user/x/api/ws/message");
  assert.equal(post.headers["X-XSRFToken"], "xsrf-1");
  assert.equal(post.headers["Content-Type"], "application/json");
  assert.equal(server.polls[0].headers["X-XSRFToken"], "xsrf-1");
  transport.dispose();
});

test("output from before the client attached comes as replay, cut at the boundary; what follows is live", async () => {
  const server = new FakeServer();
  server.append("history\x1b[6n");
  server.afterStatus = () => server.append("LIVE1");
  const { transport, shown, replayed, timers } = setup({ server, liveFrom: null });
  transport.start();
  await settle();
  server.append("LIVE2");
  await timers.advance(10);
  assert.equal(server.statusRequests.length, 1, "the boundary is asked once, before the first read");
  assert.ok(server.requests[0].url.endsWith("/api/ws/status/s1"));
  assert.deepEqual(shown, ["history\x1b[6n", "LIVE1", "LIVE2"]);
  assert.deepEqual(replayed, [true, false, false]);
  assert.match(server.polls[0].url, /[?&]offset=0&wait=0&clientId=view-1&max=11$/);
  assert.doesNotMatch(server.polls[1].url, /max=/);
  transport.dispose();
});

test("a long history comes in several replay answers, none past the boundary, without long polls", async () => {
  const server = new FakeServer({ max: 4 });
  server.append("0123456789");
  server.afterStatus = () => server.append("abcdef");
  const { transport, shown, replayed, timers } = setup({ server, liveFrom: null });
  transport.start();
  await timers.advance(10);
  assert.deepEqual(shown, ["0123", "4567", "89", "abcd", "ef"]);
  assert.deepEqual(replayed, [true, true, true, false, false]);
  const asked = server.polls.map((r) => Object.fromEntries(new URL(r.url, "http://x").searchParams));
  assert.deepEqual(asked.slice(0, 3).map((q) => [q.offset, q.wait, q.max]),
    [["0", "0", "10"], ["4", "0", "6"], ["8", "0", "2"]]);
  transport.dispose();
});

test("where the server no longer has the start of history, the gap is told and replay still stops at the boundary", async () => {
  const server = new FakeServer();
  server.append("old-old-history|");
  server.start = 8; // "old-old-" is gone
  // More comes after the status request: an answer from offset 8 uncapped would run past it.
  server.afterStatus = () => server.append("live");
  const { transport, shown, replayed, timers } = setup({ server, liveFrom: null, offset: 2 });
  transport.start();
  await timers.advance(10);
  assert.equal(shown.join(""), "\r\n\x1b[2m[6 bytes of output were dropped]\x1b[0m\r\nhistory|live");
  assert.deepEqual(shown.slice(1), ["live"]);
  assert.deepEqual(replayed, [true, false]);
  transport.dispose();
});

test("a client that started the session itself treats all output as live and asks no boundary", async () => {
  const server = new FakeServer();
  server.append("\x1b[c");
  const { transport, replayed, timers } = setup({ server, liveFrom: 0 });
  transport.start();
  await timers.advance(10);
  assert.deepEqual(replayed, [false]);
  assert.equal(server.statusRequests.length, 0);
  transport.dispose();
});

test("the boundary request is retried after network errors and is final on 404, like a read", async () => {
  let { server, transport, timers, replayed, states } = setup({ liveFrom: null });
  server.append("x");
  server.fault("network", 502);
  transport.start();
  await timers.advance(5000);
  assert.equal(server.statusRequests.length, 3);
  assert.ok(states.some((s) => s.name === "reconnecting"));
  assert.equal(transport.state.name, "connected");
  assert.deepEqual(replayed, [true]);
  transport.dispose();

  ({ server, transport, timers } = setup({ liveFrom: null }));
  server.fault(404);
  transport.start();
  await timers.advance(60000);
  assert.equal(transport.state.name, "not_found");
  assert.equal(server.requests.length, 1);
});

test("property: under random faults, cut polls, small answers and slow drawing, every byte is shown once, in order", async () => {
  for (let seed = 1; seed <= 40; seed += 1) {
    const rand = prng(seed);
    const server = new FakeServer({ max: 1 + Math.floor(rand() * 7) });
    // Half of the runs attach to a session with history, whose start the server may have dropped.
    const attach = rand() < 0.5;
    if (attach) {
      server.append(`history-${seed}-`.repeat(1 + Math.floor(rand() * 4)));
      server.start = rand() < 0.3 ? Math.floor(rand() * server.output.length) : 0;
    }
    const boundary = server.output.length;
    const { timers, transport, shown, replayed, pendingDraws } = setup({
      server, random: rand, drawLater: true, liveFrom: attach ? null : 0,
    });
    transport.start();
    let typed = "";
    for (let step = 0; step < 60; step += 1) {
      const r = rand();
      if (r < 0.3) server.append(`<${seed}.${step}>`);
      else if (r < 0.4) server.fault(rand() < 0.5 ? "network" : 502);
      else if (r < 0.5) server.dropWaiting();
      else if (r < 0.6) server.fault("lost");
      else if (r < 0.75) {
        const key = String.fromCharCode(97 + (step % 26));
        typed += key;
        transport.send(key);
      } else if (pendingDraws.length) pendingDraws.shift()();
      await timers.advance(Math.floor(rand() * 3000));
    }
    // Then a calm network until everything has arrived.
    for (let i = 0; i < 200 && (shown.join("") !== server.output || server.written !== typed); i += 1) {
      while (pendingDraws.length) pendingDraws.shift()();
      await timers.advance(1000);
    }
    const dropped = server.start ? `\r\n\x1b[2m[${server.start} bytes of output were dropped]\x1b[0m\r\n` : "";
    assert.equal(shown.join(""), dropped + server.output.slice(server.start), `seed ${seed}: output`);
    assert.equal(server.written, typed, `seed ${seed}: input`);
    // Every answer is all history or all live, and history is exactly what came before the boundary.
    const history = shown.filter((_, i) => replayed[i]).join("");
    assert.equal(history, dropped + server.output.slice(server.start, boundary), `seed ${seed}: replay`);
    transport.dispose();
  }
});

test("a big answer is drawn in pieces, whole, in order, no surrogate pair cut", () => {
  const text = `${"y\n".repeat(10000)}😀${"é😀".repeat(5000)}`;
  for (const size of [1, 2, 3, 7, 16384]) {
    const parts = pieces(text, size);
    assert.equal(parts.join(""), text);
    for (const part of parts) {
      assert.ok(part.length <= size || (size === 1 && part.length === 2));
      assert.equal(part, part.toWellFormed());
    }
  }
  assert.deepEqual(pieces(""), []);
  assert.deepEqual(pieces("abc"), ["abc"]);
});
