// A typed TypeScript client of the REST contract: openapi-fetch over the types that
// openapi-typescript generates from docs/openapi.json (generate.mjs, into ./schema.d.ts beside
// this file), compiled by tsc with `strict`, run by node (>= 18: its fetch).
//
// Usage: node out/roundtrip.mjs BASE_URL API_KEY CLIP_DIR OUT_DIR
// CLIP_DIR holds clip.avi, clip.dcm and clip.npy. Each is uploaded to its typed operation
// (POST /v1/segment/{kind}/json); the DICOM also to POST /v1/segment/dicom/dicom-seg, whose answer
// is written to OUT_DIR/seg.dcm; bytes that are no clip must come back as a typed error body.
// Prints one JSON line: {"avi": {"frames", "masks"}, "dicom": ..., "npy": ..., "seg_bytes",
// "seg_type", "refused": {"status", "code"}}.
import { readFileSync, writeFileSync } from "node:fs";
import createClient from "openapi-fetch";
import type { components, paths } from "./schema.js";

type ClipKind = components["schemas"]["ClipKind"];
type SegmentResult = components["schemas"]["SegmentResult"];
type ErrorBody = components["schemas"]["ErrorBody"];

const [baseUrl, apiKey, clipDir, outDir] = process.argv.slice(2);
if (!baseUrl || !apiKey || !clipDir || !outDir) {
  console.error("usage: node roundtrip.mjs BASE_URL API_KEY CLIP_DIR OUT_DIR");
  process.exit(2);
}

const client = createClient<paths>({ baseUrl, headers: { Authorization: `Bearer ${apiKey}` } });
// The typed operations take the clip's bytes as application/octet-stream: sent as they are
// (openapi-fetch would otherwise JSON-encode the body).
const raw = {
  bodySerializer: (body: Blob) => body,
  headers: { "Content-Type": "application/octet-stream" },
  signal: AbortSignal.timeout(60_000),
};

function clip(name: string): Blob {
  return new Blob([readFileSync(`${clipDir}/${name}`)]);
}

function failed(what: string, status: number, error: ErrorBody): Error {
  return new Error(`${what}: ${status} ${error.code}: ${error.detail}`);
}

async function masks(kind: ClipKind, file: string): Promise<{ frames: number; masks: number }> {
  const { data, error, response } = await client.POST("/v1/segment/{kind}/json", {
    params: { path: { kind } },
    body: clip(file),
    ...raw,
  });
  if (error) throw failed(kind, response.status, error);
  const result: SegmentResult = data;
  if (result.masks === null) throw new Error(`${kind}: the JSON answer has no masks`);
  return { frames: result.frames, masks: result.masks.counts.length };
}

async function segmentation(file: string): Promise<{ bytes: Uint8Array; type: string | null }> {
  const { data, error, response } = await client.POST("/v1/segment/dicom/dicom-seg", {
    body: clip(file),
    parseAs: "arrayBuffer",
    ...raw,
  });
  if (error) throw failed("dicom-seg", response.status, error);
  return { bytes: new Uint8Array(data), type: response.headers.get("content-type") };
}

async function refused(): Promise<{ status: number; code: ErrorBody["code"] }> {
  const { data, error, response } = await client.POST("/v1/segment/{kind}/json", {
    params: { path: { kind: "npy" } },
    body: new Blob([new TextEncoder().encode("these bytes are no clip")]),
    ...raw,
  });
  if (data !== undefined) throw new Error("bytes that are no clip were segmented");
  return { status: response.status, code: error.code };
}

const out = {
  avi: await masks("avi", "clip.avi"),
  dicom: await masks("dicom", "clip.dcm"),
  npy: await masks("npy", "clip.npy"),
  seg_bytes: 0,
  seg_type: null as string | null,
  refused: await refused(),
};
const seg = await segmentation("clip.dcm");
writeFileSync(`${outDir}/seg.dcm`, seg.bytes);
out.seg_bytes = seg.bytes.length;
out.seg_type = seg.type;
console.log(JSON.stringify(out));
