// Load a DICOM SEG the way the OHIF v3 viewer does (@cornerstonejs/adapters'
// createFromDICOMSegBuffer) and print the label map it builds over the source's frames.
//
// Usage: node tools/ohif-seg/labelmap.mjs SOURCE.dcm SEG.dcm
// Prints one JSON line: {"frames", "rows", "columns", "segments", "labelmap"} where labelmap is
// base64 of frames*rows*columns uint8 labels (frame-major, row-major), or exits 1 with the error
// the adapter threw.
//
// Runs in plain node: the SEG parser needs no DOM. The viewer's metadata provider is modelled
// here from the source's own header (read with dcmjs, the parser the adapter itself uses): one
// image id per source frame (DICOMweb style, ".../frames/N"), its rows and columns, its series
// and SOP instance, and its plane. A source without Image Orientation / Position (Patient) gets
// the plane and origin Cornerstone's core assumes for such images (row [1,0,0], column [0,1,0],
// origin [0,0,0]; core/utilities/getImageDataMetadata), which is how a viewer displays the cine.
import { readFileSync } from "node:fs";
import { metaData } from "@cornerstonejs/core";
import { adaptersSEG } from "@cornerstonejs/adapters";
import dcmjs from "dcmjs";

const [sourcePath, segPath] = process.argv.slice(2);
if (!sourcePath || !segPath) {
  console.error("usage: node labelmap.mjs SOURCE.dcm SEG.dcm");
  process.exit(2);
}

function arrayBuffer(path) {
  const bytes = readFileSync(path);
  return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
}

const { DicomMessage, DicomMetaDictionary } = dcmjs.data;
const source = DicomMetaDictionary.naturalizeDataset(
  DicomMessage.readFile(arrayBuffer(sourcePath), { untilTag: "7FE00010" }).dict,
);
const frames = Number(source.NumberOfFrames) || 1;
const base =
  `wadors:/studies/${source.StudyInstanceUID}/series/${source.SeriesInstanceUID}` +
  `/instances/${source.SOPInstanceUID}`;
const imageIds =
  "NumberOfFrames" in source
    ? Array.from({ length: frames }, (_, i) => `${base}/frames/${i + 1}`)
    : [base];
const iop = source.ImageOrientationPatient ? source.ImageOrientationPatient.map(Number) : [1, 0, 0, 0, 1, 0];
const origin = source.ImagePositionPatient ? source.ImagePositionPatient.map(Number) : [0, 0, 0];
const spacing = source.PixelSpacing ? source.PixelSpacing.map(Number) : [1, 1];

const modules = {
  generalSeriesModule: { seriesInstanceUID: source.SeriesInstanceUID, modality: source.Modality },
  generalImageModule: { sopInstanceUID: source.SOPInstanceUID },
  imagePlaneModule: {
    rows: source.Rows,
    columns: source.Columns,
    rowCosines: iop.slice(0, 3),
    columnCosines: iop.slice(3, 6),
    imageOrientationPatient: iop,
    imagePositionPatient: origin,
    rowPixelSpacing: spacing[0],
    columnPixelSpacing: spacing[1],
  },
  imagePixelModule: {
    rows: source.Rows,
    columns: source.Columns,
    samplesPerPixel: 1,
    bitsAllocated: 8,
    bitsStored: 8,
    highBit: 7,
    pixelRepresentation: 0,
    photometricInterpretation: "MONOCHROME2",
  },
  instance: {
    Rows: source.Rows,
    Columns: source.Columns,
    NumberOfFrames: source.NumberOfFrames,
    SOPInstanceUID: source.SOPInstanceUID,
    SeriesInstanceUID: source.SeriesInstanceUID,
    StudyInstanceUID: source.StudyInstanceUID,
  },
};
const added = new Map();
const provider = {
  get(type, imageId) {
    const own = added.get(`${type}|${imageId}`);
    if (own !== undefined) return own;
    return imageIds.includes(imageId) ? modules[type] : undefined;
  },
  add(imageId, type, value) {
    added.set(`${type}|${imageId}`, value);
  },
};
metaData.addProvider((type, imageId) => provider.get(type, imageId), 10000);

const result = await adaptersSEG.Cornerstone3D.Segmentation.createFromDICOMSegBuffer(
  imageIds,
  arrayBuffer(segPath),
  { metadataProvider: provider },
);

// One label map image per source frame; several layers only where segments overlap.
const layers = Array.isArray(result.labelMapImages[0]) ? result.labelMapImages : [result.labelMapImages];
const size = source.Rows * source.Columns;
const labels = new Uint8Array(frames * size);
for (const layer of layers) {
  layer.forEach((image, i) => {
    const data = image.voxelManager ? image.voxelManager.getScalarData() : image.getPixelData();
    for (let j = 0; j < size; j++) if (data[j]) labels[i * size + j] = data[j];
  });
}
const segments = Object.keys(result.segMetadata?.data ?? {})
  .map(Number)
  .filter((n) => n > 0);
console.log(
  JSON.stringify({
    frames,
    rows: source.Rows,
    columns: source.Columns,
    segments,
    labelmap: Buffer.from(labels).toString("base64"),
  }),
);
