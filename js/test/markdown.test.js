// Step Markdown with Killercoda's markers (markdown.js), before sanitising: which
// code becomes an action, what its action types, and that the rest is Markdown.
// (Sanitising needs a DOM: the browser tests hold it.)
import assert from "node:assert/strict";
import { test } from "node:test";

import { controlKeys, isRelative, labPath, moveFenceMarkers, renderMarkdown } from "../src/markdown.js";

const render = (md, options = {}) => renderMarkdown(md, { nonce: "N", ...options });

test("an {{exec}} code span becomes an action placeholder, plain code stays code", () => {
  const { html, actions } = render("Run `ls -l`{{exec}} or look at `man ls`.");
  assert.match(html, /<code class="labkernel-action" data-lk-action="N:0">ls -l<\/code>/);
  assert.match(html, /<code>man ls<\/code>/);
  assert.deepEqual(actions.map((a) => [a.kind, a.code, a.block, a.enter, a.interrupt]),
    [["exec", "ls -l", false, true, false]]);
});

test("the marker belongs to the span right before it, not to an earlier one", () => {
  const { html, actions } = render("`ls` and `pwd`{{exec}}");
  assert.deepEqual(actions.map((a) => a.code), ["pwd"]);
  assert.match(html, /<code>ls<\/code> and <code class="labkernel-action"/);
});

test("a fenced block marked on its closing fence is one action, its lines kept", () => {
  const md = "Do this:\n\n```bash\ncat > f <<'END'\nhello\nEND\n```{{exec}}\n\nAfter.";
  const { html, actions } = render(md);
  assert.equal(actions.length, 1);
  assert.deepEqual([actions[0].code, actions[0].block], ["cat > f <<'END'\nhello\nEND", true]);
  assert.match(html, /<pre class="labkernel-action" data-lk-action="N:0"><code class="language-bash">/);
  // The block ended at its fence: the text after it is a paragraph again.
  assert.match(html, /<p>After\.<\/p>/);
});

test("Katacoda's spellings and flags: execute, interrupt, copy, no-copy, ctrl-seq", () => {
  const md = "`a`{{execute}} `b`{{exec interrupt}} `c`{{copy}} `d`{{}} `e`{{execute T2}} `^C`{{execute ctrl-seq}} `f`{{open}}";
  const { actions, html } = render(md);
  assert.deepEqual(actions.map((a) => [a.kind, a.code, a.interrupt, a.enter]), [
    ["exec", "a", false, true], ["exec", "b", true, true], ["copy", "c", false, true],
    ["exec", "e", false, true], ["exec", "^C", false, false],
  ]);
  assert.equal(actions[4].keys, "\x03");
  assert.match(html, /<code>d<\/code>/); // {{}}: shown, no button
  assert.match(html, /<code>f<\/code>/); // {{open}}: no editor here
  assert.doesNotMatch(html, /\{\{/);
});

test("markers inside <pre> HTML blocks are shown as written, as the server's scanner does", () => {
  const md = "<pre>\n`ls`{{exec}}\n</pre>\n\n`pwd`{{exec}}";
  assert.deepEqual(render(md).actions.map((a) => a.code), ["pwd"]);
  assert.equal(moveFenceMarkers("<pre>\n```\nx\n```{{exec}}\n</pre>"), "<pre>\n```\nx\n```{{exec}}\n</pre>");
});

test("stray markers are dropped from the text (the server made the port links already)", () => {
  const { html } = render("Open [the app](/a%40b/proxy/8080/) {{TRAFFIC_SELECTOR}}now.");
  assert.match(html, /href="\/a%40b\/proxy\/8080\/"/);
  assert.doesNotMatch(html, /TRAFFIC/);
});

test("a fenced block in a list item is the code without the item's indentation", () => {
  const md = "1. Write it:\n\n   ```\n   cat <<EOF > f\n     deeper\n   EOF\n   ```{{exec}}\n\n2. `^C`{{execute ctrl-seq}} `export K=`{{execute no-newline}}";
  const { actions } = render(md);
  assert.deepEqual(actions.map((a) => [a.code, a.block, a.enter, a.keys]), [
    ["cat <<EOF > f\n  deeper\nEOF", true, true, null],
    ["^C", false, false, "\x03"],
    ["export K=", false, false, null],
  ]);
});

test("a first heading that repeats the step's title is left out", () => {
  assert.doesNotMatch(render("# Find the errors\n\ntext", { title: "Find the errors" }).html, /<h1>/);
  assert.match(render("# Something else\n\ntext", { title: "Find the errors" }).html, /<h1>Something else<\/h1>/);
});

test("code is escaped, whatever it holds", () => {
  const { html, actions } = render("`<img src=x onerror=alert(1)>`{{exec}}");
  assert.equal(actions[0].code, "<img src=x onerror=alert(1)>");
  assert.doesNotMatch(html, /<img/);
});

test("an unclosed span or fence never throws and marks nothing", () => {
  assert.deepEqual(render("`ls{{exec}}").actions, []);
  assert.deepEqual(render("```\nls\n").actions, []);
  assert.deepEqual(render("").actions, []);
});

test("relative image sources are the lab's files; URLs and server paths are not", () => {
  assert.ok(isRelative("./assets/a.png") && isRelative("img/a.png"));
  assert.ok(!isRelative("https://x/a.png") && !isRelative("data:image/png;base64,AA") && !isRelative("/files/a.png"));
  assert.equal(labPath("./assets/a.png?raw=1"), "assets/a.png");
  assert.equal(controlKeys("ctrl+d"), "\x04");
  assert.equal(controlKeys("echo"), "echo");
});
