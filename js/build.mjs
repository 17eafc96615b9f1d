// Bundles the widget (ESM for anywidget) and the stand-alone page into
// ../labkernel/static/, xterm's CSS included: nothing is loaded from a CDN.
import * as esbuild from "esbuild";

const watch = process.argv.includes("--watch");
const options = {
  entryPoints: { widget: "src/widget.js", page: "src/page.js" },
  bundle: true,
  format: "esm",
  target: ["es2020"],
  outdir: "../labkernel/static",
  minify: !watch,
  sourcemap: watch ? "inline" : false,
  legalComments: "eof",
  logLevel: "info",
};

if (watch) {
  const ctx = await esbuild.context(options);
  await ctx.watch();
} else {
  await esbuild.build(options);
}
