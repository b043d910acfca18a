// EchoSeg live viewer: a video file, a camera/capture device or a screen, streamed frame by frame
// over /v1/stream (gray8 frames, gray8 masks), each mask drawn over the frame it belongs to.
// Protocol: docs/service.md ("WebSocket"). No dependencies, no build step.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const video = $("source");
  const display = $("display");
  const dctx = display.getContext("2d", { willReadFrequently: true });
  const work = document.createElement("canvas"); // the region of interest of the current frame
  const wctx = work.getContext("2d", { willReadFrequently: true });
  const curve = $("curve");
  const cctx = curve.getContext("2d");

  const FILL = [255, 64, 64]; // translucent red over the cavity
  const CONTOUR = [255, 204, 51]; // its outline
  const PEAK_WINDOW = 5; // frames either side for the provisional ED/ES marks

  // Everything the page knows, in one place (window.echoseg.state: the tests read it too).
  const state = {
    phase: "idle", // idle | loaded | connecting | streaming | ending | done | error
    source: null, // "file" | "camera" | "screen"
    roi: null, // {x, y, w, h} in source pixels
    sent: 0,
    received: 0,
    dropped: 0,
    areas: [], // mask area (pixels) by frame index
    latencies: [], // ms, in arrival order
    lastIndex: -1, // index of the frame on display
    ready: null, // the server's ready message
    summary: null,
    error: null, // {code, detail} from the server, or a local problem
    closeCode: null,
    confidence: null, // the last mask's quality flag and confidence (mask_format 2)
    flags: { ok: 0, low_confidence: 0, no_lv: 0 }, // masks per quality flag
    provisional: { ed: [], es: [] },
  };
  window.echoseg = { state };

  let ws = null;
  let mediaStream = null;
  let pending = new Map(); // frame index -> ImageData of the region sent
  let sentAt = []; // frame index -> performance.now() when sent
  let endSentAt = null;
  let maxInFlight = 8;
  let lookahead = 1;
  let recorder = null;
  let recorded = [];
  let videoUrl = null;
  let overlayUrl = null;
  let drag = null;

  // -- helpers ---------------------------------------------------------------------------------
  function setStatus(text) {
    $("status").textContent = text;
  }

  function showError(text) {
    const el = $("error");
    el.textContent = text;
    el.hidden = !text;
  }

  function percentile(values, q) {
    if (!values.length) return null;
    const sorted = [...values].sort((a, b) => a - b);
    const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((q / 100) * sorted.length) - 1));
    return sorted[i];
  }

  function updateStats() {
    $("sent").textContent = state.sent;
    $("received").textContent = state.received;
    $("dropped").textContent = state.dropped;
    const p50 = percentile(state.latencies, 50);
    const p99 = percentile(state.latencies, 99);
    $("p50").textContent = p50 === null ? "–" : `${p50.toFixed(1)} ms`;
    $("p99").textContent = p99 === null ? "–" : `${p99.toFixed(1)} ms`;
    const conf = $("confidence");
    if (state.confidence === null) {
      conf.textContent = "–";
      conf.className = "";
    } else {
      const { flag, value } = state.confidence;
      const word = { ok: "ok", low_confidence: "LOW", no_lv: "NO LV" }[flag] || flag;
      conf.textContent = value === null || value === undefined ? word : `${word} (${value.toFixed(2)})`;
      conf.className = flag === "ok" ? "" : "low";
    }
    const f = state.flags;
    $("flags").textContent = `ok ${f.ok} · low ${f.low_confidence} · no LV ${f.no_lv}`;
    $("flags").className = f.low_confidence + f.no_lv > 0 ? "low" : "";
  }

  function setButtons() {
    const streaming = ["connecting", "streaming", "ending"].includes(state.phase);
    const haveSource = state.source !== null && video.videoWidth > 0;
    $("start").disabled = streaming || !haveSource;
    $("stop").disabled = !streaming;
    $("reset-roi").disabled = streaming || !haveSource;
    $("file").disabled = streaming;
    $("camera").disabled = streaming;
    $("screen").disabled = streaming;
    $("save-video").disabled = overlayUrl === null;
    $("save-json").disabled = state.received === 0;
  }

  // -- sources ---------------------------------------------------------------------------------
  function stopMedia() {
    if (mediaStream) mediaStream.getTracks().forEach((t) => t.stop());
    mediaStream = null;
    if (videoUrl) URL.revokeObjectURL(videoUrl);
    videoUrl = null;
    video.pause();
    video.removeAttribute("src");
    video.srcObject = null;
  }

  async function useFile(file) {
    stopMedia();
    state.source = "file";
    videoUrl = URL.createObjectURL(file);
    video.src = videoUrl;
    video.loop = false;
    await once(video, "loadeddata");
    loaded();
  }

  async function useDevice(kind) {
    stopMedia();
    try {
      mediaStream =
        kind === "camera"
          ? await navigator.mediaDevices.getUserMedia({ video: true, audio: false })
          : await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
    } catch (e) {
      showError(`Could not open the ${kind}: ${e.message || e.name}`);
      return;
    }
    state.source = kind;
    video.srcObject = mediaStream;
    await video.play();
    loaded();
  }

  function once(target, event) {
    return new Promise((resolve) => target.addEventListener(event, resolve, { once: true }));
  }

  function loaded() {
    showError("");
    state.phase = "loaded";
    state.roi = { x: 0, y: 0, w: video.videoWidth, h: video.videoHeight };
    display.width = video.videoWidth;
    display.height = video.videoHeight;
    setStatus(`${state.source}: ${video.videoWidth}×${video.videoHeight}. Press Start.`);
    preview();
    setButtons();
  }

  function preview() {
    if (state.phase !== "loaded") return;
    dctx.drawImage(video, 0, 0);
    drawRoi(state.roi);
    if (!video.paused) requestAnimationFrame(preview);
  }

  function drawRoi(roi) {
    if (!roi) return;
    dctx.save();
    dctx.strokeStyle = "rgb(255, 204, 51)";
    dctx.setLineDash([6, 4]);
    dctx.lineWidth = Math.max(1, display.width / 320);
    dctx.strokeRect(roi.x + 0.5, roi.y + 0.5, roi.w - 1, roi.h - 1);
    dctx.restore();
  }

  // -- region of interest (drag on the image before Start) ------------------------------------
  function canvasPoint(event) {
    const r = display.getBoundingClientRect();
    const x = ((event.clientX - r.left) / r.width) * display.width;
    const y = ((event.clientY - r.top) / r.height) * display.height;
    return { x: Math.max(0, Math.min(display.width, x)), y: Math.max(0, Math.min(display.height, y)) };
  }

  display.addEventListener("pointerdown", (e) => {
    if (state.phase !== "loaded") return;
    drag = canvasPoint(e);
  });
  display.addEventListener("pointermove", (e) => {
    if (!drag) return;
    const p = canvasPoint(e);
    dctx.drawImage(video, 0, 0);
    drawRoi(rectOf(drag, p));
  });
  display.addEventListener("pointerup", (e) => {
    if (!drag) return;
    const roi = rectOf(drag, canvasPoint(e));
    drag = null;
    if (roi.w >= 16 && roi.h >= 16) state.roi = roi;
    dctx.drawImage(video, 0, 0);
    drawRoi(state.roi);
    setStatus(`Region ${state.roi.w}×${state.roi.h} at (${state.roi.x}, ${state.roi.y}). Press Start.`);
  });

  function rectOf(a, b) {
    const x = Math.round(Math.min(a.x, b.x));
    const y = Math.round(Math.min(a.y, b.y));
    return { x, y, w: Math.round(Math.abs(a.x - b.x)), h: Math.round(Math.abs(a.y - b.y)) };
  }

  // -- streaming -------------------------------------------------------------------------------
  function streamUrl() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const key = $("key").value.trim();
    return `${scheme}://${location.host}/v1/stream` + (key ? `?token=${encodeURIComponent(key)}` : "");
  }

  function resetResults() {
    Object.assign(state, {
      sent: 0, received: 0, dropped: 0, areas: [], latencies: [], lastIndex: -1, ready: null,
      summary: null, error: null, closeCode: null, confidence: null, provisional: { ed: [], es: [] },
      flags: { ok: 0, low_confidence: 0, no_lv: 0 },
    });
    pending = new Map();
    sentAt = [];
    endSentAt = null;
    if (overlayUrl) URL.revokeObjectURL(overlayUrl);
    overlayUrl = null;
    $("summary").innerHTML = '<p class="hint">Appears when the stream ends.</p>';
    showError("");
    drawCurve();
    updateStats();
  }

  function start() {
    resetResults();
    const roi = state.roi;
    work.width = roi.w;
    work.height = roi.h;
    display.width = roi.w;
    display.height = roi.h;
    state.phase = "connecting";
    setButtons();
    setStatus("Connecting…");
    ws = new WebSocket(streamUrl());
    ws.binaryType = "arraybuffer";
    ws.onopen = () => {
      const message = {
        type: "start", width: roi.w, height: roi.h, encoding: "gray8", mask_encoding: "gray8", mask_format: 2,
      };
      const fps = sourceFps();
      if (fps) message.fps = fps;
      ws.send(JSON.stringify(message));
    };
    ws.onmessage = (event) => (typeof event.data === "string" ? onText(event.data) : onMask(event.data));
    ws.onclose = onClose;
    ws.onerror = () => setStatus("The connection failed.");
  }

  function sourceFps() {
    if (mediaStream) {
      const settings = mediaStream.getVideoTracks()[0]?.getSettings() || {};
      return settings.frameRate || null;
    }
    return null; // a file's frame rate is not exposed by the browser; the server does without it
  }

  async function onReady(message) {
    state.ready = message;
    maxInFlight = message.max_in_flight || maxInFlight;
    lookahead = message.lookahead_frames ?? lookahead;
    state.phase = "streaming";
    setButtons();
    setStatus(`Streaming to ${message.model?.preset || "the"} model (${message.model?.backend || ""}).`);
    startRecorder();
    if (state.source === "file") {
      video.loop = $("loop").checked;
      video.currentTime = 0;
      await video.play();
    }
    scheduleFrame();
  }

  function scheduleFrame() {
    if (state.phase !== "streaming") return;
    if ("requestVideoFrameCallback" in HTMLVideoElement.prototype) {
      video.requestVideoFrameCallback(() => {
        captureFrame();
        scheduleFrame();
      });
    } else {
      setTimeout(() => {
        captureFrame();
        scheduleFrame();
      }, 1000 / (sourceFps() || 30));
    }
  }

  function captureFrame() {
    if (state.phase !== "streaming" || ws.readyState !== WebSocket.OPEN) return;
    const { x, y, w, h } = state.roi;
    wctx.drawImage(video, x, y, w, h, 0, 0, w, h);
    const rgba = wctx.getImageData(0, 0, w, h);
    // The documented back-pressure: never more than max_in_flight frames unanswered (less the
    // look-ahead the server holds back); past it the frame is skipped here, not queued.
    if (state.sent - state.received >= Math.max(1, maxInFlight - lookahead - 1)) {
      state.dropped += 1;
      updateStats();
      return;
    }
    const gray = new Uint8Array(w * h);
    const px = rgba.data;
    for (let i = 0, j = 0; i < gray.length; i += 1, j += 4) {
      gray[i] = (77 * px[j] + 150 * px[j + 1] + 29 * px[j + 2] + 128) >> 8; // BT.601 luma
    }
    const index = state.sent;
    pending.set(index, rgba);
    sentAt[index] = performance.now();
    ws.send(gray);
    state.sent += 1;
    updateStats();
  }

  function onMask(buffer) {
    const view = new DataView(buffer);
    const index = view.getUint32(0, true);
    let mask;
    if (state.ready?.mask_format === 2) {
      // bytes 4 and 5: the frame's quality flag (the order of ready.flags) and confidence 0..255
      const flag = (state.ready.flags || ["ok", "low_confidence", "no_lv"])[view.getUint8(4)] || "ok";
      state.flags[flag] = (state.flags[flag] || 0) + 1;
      state.confidence = { flag, value: view.getUint8(5) / 255 };
      mask = new Uint8Array(buffer, 6);
    } else {
      mask = new Uint8Array(buffer, 4);
    }
    const frame = pending.get(index);
    pending.delete(index);
    const needed = Math.min(index + lookahead, state.sent - 1);
    const since = endSentAt !== null && index + lookahead >= state.sent ? endSentAt : sentAt[needed];
    if (since !== undefined) state.latencies.push(performance.now() - since);
    let area = 0;
    for (let i = 0; i < mask.length; i += 1) area += mask[i] ? 1 : 0;
    state.areas[index] = area;
    state.received += 1;
    state.lastIndex = index;
    if (frame) drawOverlay(frame, mask);
    updateProvisionalMarks();
    drawCurve();
    updateStats();
  }

  function drawOverlay(frame, mask) {
    const { width: w, height: h } = frame;
    const out = new ImageData(new Uint8ClampedArray(frame.data), w, h);
    const px = out.data;
    for (let y = 0; y < h; y += 1) {
      for (let x = 0; x < w; x += 1) {
        const i = y * w + x;
        if (!mask[i]) continue;
        const edge =
          x === 0 || y === 0 || x === w - 1 || y === h - 1 ||
          !mask[i - 1] || !mask[i + 1] || !mask[i - w] || !mask[i + w];
        const j = 4 * i;
        if (edge) {
          px[j] = CONTOUR[0];
          px[j + 1] = CONTOUR[1];
          px[j + 2] = CONTOUR[2];
        } else {
          px[j] = (px[j] + FILL[0]) >> 1;
          px[j + 1] = (px[j + 1] + FILL[1]) >> 1;
          px[j + 2] = (px[j + 2] + FILL[2]) >> 1;
        }
      }
    }
    dctx.putImageData(out, 0, 0);
  }

  function onText(text) {
    let message;
    try {
      message = JSON.parse(text);
    } catch {
      return;
    }
    if (message.type === "ready") onReady(message);
    else if (message.type === "summary") onSummary(message);
    else if (message.type === "error") {
      state.error = { code: message.code, detail: message.detail };
      state.phase = "error";
      showError(`${message.code}: ${message.detail}`);
    }
  }

  function onSummary(summary) {
    state.summary = summary;
    renderSummary(summary);
    drawCurve();
    updateStats();
  }

  function onClose(event) {
    state.closeCode = event.code;
    stopCapture();
    if (state.summary) {
      state.phase = "done";
      setStatus(`Done: ${state.received} masks for ${state.sent} frames sent.`);
    } else {
      state.phase = "error";
      if (!state.error) {
        const why = event.code === 1008 ? "the server needs a valid API key" : event.reason || "no reason given";
        state.error = { code: `closed ${event.code}`, detail: why };
        showError(`Connection closed (${event.code}): ${why}.`);
      } else {
        setStatus(`The server closed the stream (code ${event.code}).`);
      }
      if (event.code === 1008) showError(`Not authorised (1008): ${state.error.detail}. Enter the API key.`);
    }
    setButtons();
  }

  function stop() {
    if (!ws || state.phase !== "streaming") return;
    state.phase = "ending";
    setButtons();
    setStatus("Ending: waiting for the last masks and the summary…");
    stopCapture();
    endSentAt = performance.now();
    ws.send(JSON.stringify({ type: "end" }));
  }

  function stopCapture() {
    if (state.source === "file") video.pause();
    if (recorder && recorder.state !== "inactive") recorder.stop();
  }

  video.addEventListener("ended", () => {
    if (state.phase === "streaming") stop();
  });

  // -- the area curve and its ED/ES marks ------------------------------------------------------
  function updateProvisionalMarks() {
    const a = state.areas;
    const ed = [];
    const es = [];
    for (let t = PEAK_WINDOW; t < a.length - PEAK_WINDOW; t += 1) {
      if (a[t] === undefined) continue;
      let max = true;
      let min = true;
      for (let d = -PEAK_WINDOW; d <= PEAK_WINDOW && (max || min); d += 1) {
        if (d === 0 || a[t + d] === undefined) continue;
        if (a[t + d] > a[t]) max = false;
        if (a[t + d] < a[t]) min = false;
      }
      if (max && !min) ed.push(t);
      if (min && !max) es.push(t);
    }
    state.provisional = { ed, es };
  }

  function drawCurve() {
    const w = curve.width;
    const h = curve.height;
    cctx.clearRect(0, 0, w, h);
    const a = state.areas;
    const points = [];
    a.forEach((v, t) => v !== undefined && points.push([t, v]));
    if (!points.length) return;
    const n = Math.max(a.length, 2);
    // the y axis spans the areas seen (with a margin), so the beating is visible at a glance
    const values = points.map((p) => p[1]);
    const high = Math.max(...values);
    const low = Math.min(...values);
    const margin = Math.max(1, 0.1 * (high - low));
    const top = high + margin;
    const bottom = Math.max(0, low - margin);
    const X = (t) => 8 + ((w - 16) * t) / (n - 1);
    const Y = (v) => h - 20 - ((h - 40) * (v - bottom)) / (top - bottom || 1);
    cctx.fillStyle = "#9aa7b4";
    cctx.font = "12px system-ui, sans-serif";
    cctx.fillText(`${Math.round(high)} px`, 8, 12);
    cctx.fillText(`${Math.round(low)} px`, 8, h - 4);
    cctx.strokeStyle = "#e8edf2";
    cctx.lineWidth = 1.5;
    cctx.beginPath();
    points.forEach(([t, v], i) => (i ? cctx.lineTo(X(t), Y(v)) : cctx.moveTo(X(t), Y(v))));
    cctx.stroke();
    const final = state.summary;
    const ed = final ? final.ed_frames : state.provisional.ed;
    const es = final ? final.es_frames : state.provisional.es;
    const mark = (t, color, up) => {
      if (a[t] === undefined) return;
      const x = X(t);
      const y = Y(a[t]);
      cctx.fillStyle = color;
      cctx.beginPath();
      cctx.moveTo(x, up ? y - 9 : y + 9);
      cctx.lineTo(x - 5, up ? y - 1 : y + 1);
      cctx.lineTo(x + 5, up ? y - 1 : y + 1);
      cctx.fill();
    };
    ed.forEach((t) => mark(t, "#4fc3f7", true));
    es.forEach((t) => mark(t, "#ff8a65", false));
  }

  function renderSummary(s) {
    const el = $("summary");
    el.textContent = "";
    const ef = document.createElement("p");
    ef.innerHTML = `EF <span class="ef"></span>`;
    ef.querySelector(".ef").textContent = s.ef === null || s.ef === undefined ? "not available" : `${s.ef.toFixed(1)} %`;
    el.appendChild(ef);
    const frames = document.createElement("p");
    frames.textContent = `${s.frames} frames · ED ${JSON.stringify(s.ed_frames)} · ES ${JSON.stringify(s.es_frames)}`;
    el.appendChild(frames);
    const quality = s.quality || {};
    const why = [s.ef === null || s.ef === undefined ? s.ef_null_reason : null, quality.reason].filter(Boolean);
    if (why.length) {
      const p = document.createElement("p");
      p.className = "hint quality";
      p.textContent = `Quality: ${why.join(" — ")}`;
      el.appendChild(p);
    }
    if (s.region) {
      const r = s.region;
      const p = document.createElement("p");
      p.className = "hint region";
      p.textContent = `Image region (${r.source}): x ${r.x0}–${r.x1}, y ${r.y0}–${r.y1}`;
      el.appendChild(p);
    }
    if (s.beats && s.beats.length) {
      const table = document.createElement("table");
      table.innerHTML = "<thead><tr><th>Beat</th><th>ED</th><th>ES</th><th>EF %</th></tr></thead>";
      const body = document.createElement("tbody");
      s.beats.forEach((b, i) => {
        const row = document.createElement("tr");
        [i + 1, b.ed, b.es, b.ef === null || b.ef === undefined ? "–" : Number(b.ef).toFixed(1)].forEach((v) => {
          const cell = document.createElement("td");
          cell.textContent = v;
          row.appendChild(cell);
        });
        body.appendChild(row);
      });
      table.appendChild(body);
      el.appendChild(table);
    }
  }

  // -- saving ----------------------------------------------------------------------------------
  function startRecorder() {
    recorded = [];
    if (!window.MediaRecorder || !display.captureStream) return;
    try {
      recorder = new MediaRecorder(display.captureStream(), { mimeType: "video/webm" });
    } catch {
      recorder = null;
      return;
    }
    recorder.ondataavailable = (e) => e.data.size && recorded.push(e.data);
    recorder.onstop = () => {
      overlayUrl = URL.createObjectURL(new Blob(recorded, { type: "video/webm" }));
      setButtons();
    };
    recorder.start(1000);
  }

  function download(url, name) {
    const a = document.createElement("a");
    a.href = url;
    a.download = name;
    document.body.appendChild(a);
    a.click();
    a.remove();
  }

  function resultsJson() {
    const frames = [];
    state.areas.forEach((area, index) => area !== undefined && frames.push({ index, area_px: area }));
    return {
      model: state.ready?.model || null,
      region: state.roi,
      frames_sent: state.sent,
      masks_received: state.received,
      frames_dropped: state.dropped,
      latency_ms: { p50: percentile(state.latencies, 50), p99: percentile(state.latencies, 99) },
      frames,
      flags: state.flags,
      summary: state.summary,
    };
  }

  // -- wiring ----------------------------------------------------------------------------------
  $("file").addEventListener("change", (e) => e.target.files[0] && useFile(e.target.files[0]));
  $("camera").addEventListener("click", () => useDevice("camera"));
  $("screen").addEventListener("click", () => useDevice("screen"));
  $("start").addEventListener("click", start);
  $("stop").addEventListener("click", stop);
  $("reset-roi").addEventListener("click", () => {
    state.roi = { x: 0, y: 0, w: video.videoWidth, h: video.videoHeight };
    dctx.drawImage(video, 0, 0);
    drawRoi(state.roi);
  });
  $("save-video").addEventListener("click", () => overlayUrl && download(overlayUrl, "echoseg-overlay.webm"));
  $("save-json").addEventListener("click", () => {
    const blob = new Blob([JSON.stringify(resultsJson(), null, 2)], { type: "application/json" });
    const url = URL.createObjectURL(blob);
    download(url, "echoseg-results.json");
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  });
  window.echoseg.results = resultsJson;
  setButtons();
})();
