// Generate the TypeScript types of the REST contract with openapi-typescript (its Node API).
//
// Usage: node tools/openapi-ts/generate.mjs docs/openapi.json OUT/schema.d.ts
//
// One option beyond the defaults, the `transform` the openapi-typescript docs give for files:
// a binary string (`format: binary`: the clip uploaded, the NPZ/MP4/DICOM answers) is typed as a
// `Blob` instead of `string`, so a caller sends bytes without a cast. The generator's own warnings
// (its Redocly lint of the document) go to stderr as " ⚠  ..." lines; the test counts them.
import { readFileSync, writeFileSync } from "node:fs";
import openapiTS, { astToString } from "openapi-typescript";
import ts from "typescript";

const [input, output] = process.argv.slice(2);
if (!input || !output) {
  console.error("usage: node generate.mjs OPENAPI.json OUT.d.ts");
  process.exit(2);
}

const BLOB = ts.factory.createTypeReferenceNode(ts.factory.createIdentifier("Blob"));
const NULL = ts.factory.createLiteralTypeNode(ts.factory.createNull());

const ast = await openapiTS(JSON.parse(readFileSync(input, "utf8")), {
  transform(schemaObject) {
    if (schemaObject.format === "binary") {
      return schemaObject.nullable ? ts.factory.createUnionTypeNode([BLOB, NULL]) : BLOB;
    }
    return undefined;
  },
});
writeFileSync(output, astToString(ast));
