// The page of `maskformer serve`: upload a picture, call POST /v1/segment, show the overlay,
// the legend and the downloads; hovering the overlay reads the segment id under the pointer
// from segment_map_png (COCO panoptic RGB encoding: id = R + 256 G + 256^2 B).
"use strict";

const $ = (id) => document.getElementById(id);
const THRESHOLDS = ["threshold", "mask_threshold", "overlap_mask_area_threshold"];
const state = { file: null, colors: {}, segments: new Map(), ids: null, width: 0, original: null, urls: [], latest: 0 };

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

async function loadModel() {
  try {
    const response = await fetch("/v1/model");
    const info = await response.json();
    for (const label of info.labels) state.colors[label.id] = label.color;
    $("task").value = info.default_task;
    const megapixels = (info.max_pixels / 1e6).toFixed(0);
    const megabytes = (info.max_upload_bytes / 1048576).toFixed(0);
    $("model-line").textContent =
      `${info.model} · ${info.num_labels} classes · ${info.backbone} · ${info.device} ` +
      `· uploads up to ${megabytes} MB / ${megapixels} Mpx`;
  } catch (error) {
    $("model-line").textContent = `cannot read /v1/model: ${error}`;
  }
  updateThresholdFields();
}

function updateThresholdFields() {
  const semantic = $("task").value === "semantic";
  for (const name of THRESHOLDS) {
    $(name).disabled = semantic;
    $(name).closest(".field").classList.toggle("disabled", semantic);
    $(`${name}-value`).textContent = Number($(name).value).toFixed(2);
  }
}

function chooseFile(file) {
  if (!file) return;
  state.file = file;
  $("run").disabled = false;
  if (state.original) URL.revokeObjectURL(state.original);
  state.original = URL.createObjectURL(file);
  const original = $("original");
  original.src = state.original;
  original.hidden = false;
  segment();
}

function remember(url) {
  state.urls.push(url);
  return url;
}

function pngBlob(base64) {
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  return new Blob([bytes], { type: "image/png" });
}

async function segment() {
  if (!state.file) return;
  const form = new FormData();
  form.append("image", state.file, state.file.name || "image.png");
  form.append("task", $("task").value);
  for (const name of THRESHOLDS) form.append(name, $(name).value);
  form.append("legend", "false");
  form.append("segment_map", "true");
  const ticket = ++state.latest; // only the newest request's answer is shown
  setStatus("Segmenting…");
  const started = performance.now();
  try {
    const response = await fetch("/v1/segment", { method: "POST", body: form });
    const body = await response.json().catch(() => ({}));
    if (ticket !== state.latest) return;
    if (!response.ok) {
      const detail = Array.isArray(body.detail)
        ? body.detail.map((d) => `${d.loc.slice(-1)}: ${d.msg}`).join("; ")
        : body.detail || response.statusText;
      throw new Error(`${response.status}: ${detail}`);
    }
    await show(body);
    const seconds = ((performance.now() - started) / 1000).toFixed(2);
    setStatus(`${body.segments_info.length} segments · ${body.width}×${body.height} · ${seconds} s`);
  } catch (error) {
    if (ticket === state.latest) setStatus(String(error.message || error), true);
  }
}

async function show(result) {
  for (const url of state.urls.splice(0)) URL.revokeObjectURL(url);
  state.segments = new Map(result.segments_info.map((s) => [s.id, s]));
  const overlay = $("overlay");
  const loaded = new Promise((resolve) => (overlay.onload = resolve));
  overlay.src = remember(URL.createObjectURL(pngBlob(result.overlay_png)));
  overlay.hidden = false;
  await loaded;
  await readSegmentMap(result.segment_map_png, result.width, result.height);
  drawLegend(result.segments_info);

  const stem = result.file_name.replace(/\.png$/, "");
  const label = $("download-label");
  label.href = remember(URL.createObjectURL(pngBlob(result.label_png)));
  label.download = `${stem}_${result.task}.png`;
  const json = $("download-json");
  json.href = remember(URL.createObjectURL(
    new Blob([JSON.stringify(withoutImages(result), null, 1)], { type: "application/json" })
  ));
  json.download = `${stem}_${result.task}.json`;
  $("downloads").hidden = false;
  $("results").dataset.ready = result.task; // the overlay, legend and downloads are in place
}

function withoutImages(result) {
  const copy = { ...result };
  delete copy.overlay_png;
  delete copy.segment_map_png;
  delete copy.label_png;
  return copy;
}

async function readSegmentMap(base64, width, height) {
  const bitmap = await createImageBitmap(pngBlob(base64), { colorSpaceConversion: "none" });
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.drawImage(bitmap, 0, 0);
  const rgba = context.getImageData(0, 0, width, height).data;
  const ids = new Uint32Array(width * height);
  for (let i = 0; i < ids.length; i++) {
    ids[i] = rgba[4 * i] + 256 * rgba[4 * i + 1] + 65536 * rgba[4 * i + 2];
  }
  state.ids = ids;
  state.width = width;
}

function drawLegend(segments) {
  const byClass = new Map();
  for (const s of segments) {
    const entry = byClass.get(s.category_id) || { label: s.label, count: 0, score: null };
    entry.count += 1;
    if (s.score !== undefined) entry.score = Math.max(entry.score ?? 0, s.score);
    byClass.set(s.category_id, entry);
  }
  const legend = $("legend");
  legend.replaceChildren();
  for (const [classId, entry] of [...byClass].sort((a, b) => a[0] - b[0])) {
    const item = document.createElement("li");
    item.dataset.category = classId;
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    const color = state.colors[classId] || [128, 128, 128];
    swatch.style.background = `rgb(${color.join(",")})`;
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = entry.label;
    const count = document.createElement("span");
    count.className = "count";
    count.textContent = entry.count > 1 ? `×${entry.count}` : "";
    item.append(swatch, name, count);
    legend.append(item);
  }
  if (!segments.length) {
    const item = document.createElement("li");
    item.textContent = "no segment found";
    legend.append(item);
  }
}

function hover(event) {
  const overlay = $("overlay");
  const tooltip = $("tooltip");
  if (!state.ids) return;
  const box = overlay.getBoundingClientRect();
  const x = Math.floor(((event.clientX - box.left) / box.width) * overlay.naturalWidth);
  const y = Math.floor(((event.clientY - box.top) / box.height) * overlay.naturalHeight);
  const segment = x >= 0 && y >= 0 && x < state.width ? state.segments.get(state.ids[y * state.width + x]) : undefined;
  for (const item of $("legend").children) {
    item.classList.toggle("active", segment !== undefined && item.dataset.category == segment.category_id);
  }
  if (!segment) {
    tooltip.hidden = true;
    return;
  }
  const score = segment.score === undefined ? "" : ` · score ${segment.score.toFixed(2)}`;
  tooltip.textContent = `${segment.label}${score} · ${segment.area} px`;
  tooltip.hidden = false;
  const frame = $("overlay-frame").getBoundingClientRect();
  tooltip.style.left = `${Math.min(event.clientX - frame.left + 12, frame.width - tooltip.offsetWidth - 4)}px`;
  tooltip.style.top = `${event.clientY - frame.top + 12}px`;
}

function leave() {
  $("tooltip").hidden = true;
  for (const item of $("legend").children) item.classList.remove("active");
}

function setUp() {
  $("file").addEventListener("change", (event) => chooseFile(event.target.files[0]));
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    chooseFile(event.dataTransfer.files[0]);
  });
  drop.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") $("file").click();
  });
  $("task").addEventListener("change", () => {
    updateThresholdFields();
    segment();
  });
  for (const name of THRESHOLDS) {
    $(name).addEventListener("input", updateThresholdFields);
    $(name).addEventListener("change", segment);
  }
  $("run").addEventListener("click", segment);
  $("overlay").addEventListener("mousemove", hover);
  $("overlay").addEventListener("mouseleave", leave);
  loadModel();
}

setUp();
