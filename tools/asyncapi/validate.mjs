// Validate an AsyncAPI document with the AsyncAPI project's parser; print its diagnostics.
// Usage: node tools/asyncapi/validate.mjs docs/asyncapi.yaml   (exit 1 on any error)
import { readFileSync } from "node:fs";
import { Parser, DiagnosticSeverity } from "@asyncapi/parser";

const path = process.argv[2];
const parser = new Parser();
const { document, diagnostics } = await parser.parse(readFileSync(path, "utf8"), { source: path });
const names = { 0: "error", 1: "warning", 2: "information", 3: "hint" };
for (const d of diagnostics) {
  const where = d.path && d.path.length ? d.path.join(".") : "(document)";
  console.log(`${names[d.severity] ?? d.severity}: ${d.code}: ${d.message} at ${where}`);
}
const errors = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Error).length;
const warnings = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Warning).length;
console.log(
  `${path}: ${document ? `AsyncAPI ${document.version()}, ${document.channels().length} channel(s), ` +
    `${document.operations().length} operation(s), ${document.allMessages().length} message(s); ` : ""}` +
    `${errors} error(s), ${warnings} warning(s)`,
);
process.exit(errors || !document ? 1 : 0);
