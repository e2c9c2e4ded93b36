// rareseg web page: upload a scene, poll the job, show and re-render its outputs.
"use strict";

const POLL_MS = 400;
const RENDER_DELAY_MS = 250;
// mask.qml and mask.tif.aux.xml: saved beside the mask (same prefix), QGIS shows class names and colours
const DOWNLOADS = ["mask.tif", "mask.qml", "mask.tif.aux.xml", "rare_prob.tif", "saliency_topk.tif", "preview_mask.png", "preview_prob.png", "summary.json"];
const SOURCE_LABELS = { checkpoint: "calibrated", default: "default", override: "custom" };

const state = { config: null, file: null, jobId: null, job: null, busy: false, pollTimer: null, renderTimer: null, renderSeq: 0 };
const $ = (id) => document.getElementById(id);

async function api(path, options) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (err) {
    throw new Error(`cannot reach the server (${err.message})`);
  }
  let body = null;
  try {
    body = await response.json();
  } catch (err) {
    body = null;
  }
  if (!response.ok) {
    throw new Error(body && body.error ? body.error : `${response.status} ${response.statusText}`);
  }
  return body;
}

function showMessage(text, kind = "error") {
  const message = $("message");
  message.textContent = text;
  message.className = kind;
  message.hidden = !text;
}

function formatBytes(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  const mb = bytes / 2 ** 20;
  return mb >= 1 ? `${mb.toFixed(1)} MB` : `${(bytes / 1024).toFixed(0)} kB`;
}

function element(tag, properties = {}, children = []) {
  const node = document.createElement(tag);
  Object.assign(node, properties);
  for (const child of children) node.append(child);
  return node;
}

function swatch(colour) {
  const node = element("span", { className: "swatch" });
  node.style.backgroundColor = colour;
  return node;
}

function classColour(name) {
  return state.config.classes.find((entry) => entry.name === name).colour;
}

function buildOptions() {
  const config = state.config;
  const names = config.classes.map((entry) => entry.name).join(", ");
  $("model-info").textContent = `model ${config.checkpoint || "(in memory)"} · ${config.bands} bands · classes: ${names}`;
  $("drop-limit").textContent = `GeoTIFF with ${config.bands} bands, up to ${config.max_upload_mb} MB`;
  const fieldset = $("rare-classes");
  config.rare_classes.forEach((name, index) => {
    const threshold = config.thresholds[name];
    const check = element("input", { type: "checkbox", id: `rare-${index}`, checked: true });
    const slider = element("input", { type: "range", id: `threshold-${index}`, min: 0, max: 1, step: 0.01, value: threshold });
    slider.setAttribute("aria-label", `threshold of ${name}`);
    const value = element("output", { textContent: Number(threshold).toFixed(2) });
    const source = element("span", { className: "muted source", textContent: SOURCE_LABELS[config.threshold_sources[name]] });
    const label = element("label", { htmlFor: check.id }, [swatch(classColour(name)), name]);
    const row = element("div", { className: "rare-row" }, [check, label, slider, value, source]);
    row.dataset.name = name;
    slider.addEventListener("input", () => {
      value.textContent = Number(slider.value).toFixed(2);
      source.textContent = SOURCE_LABELS.override;
    });
    slider.addEventListener("change", scheduleRender);
    check.addEventListener("change", () => {
      slider.disabled = !check.checked;
      scheduleRender();
    });
    fieldset.append(row);
  });
  $("topk").value = config.topk;
  $("colorbar").style.background = `linear-gradient(to right, ${config.colorbar.join(", ")})`;
}

function selectedRows() {
  return [...document.querySelectorAll(".rare-row")].filter((row) => row.querySelector("input[type=checkbox]").checked);
}

function appendOptions(form) {
  const rows = selectedRows();
  if (!rows.length) throw new Error("select at least one rare class");
  form.append("rare_classes", rows.map((row) => row.dataset.name).join(","));
  form.append("threshold", rows.map((row) => `${row.dataset.name}:${row.querySelector("input[type=range]").value}`).join(","));
  form.append("topk", $("topk").value);
}

function setFile(file) {
  state.file = file || null;
  $("drop-text").textContent = file ? `${file.name} (${formatBytes(file.size)})` : "Drop a GeoTIFF here or click to choose one";
  $("drop-zone").classList.toggle("chosen", Boolean(file));
  showMessage("");
  if (file && file.size > state.config.max_upload_mb * 2 ** 20) {
    showMessage(`${file.name} is ${formatBytes(file.size)}; the server accepts up to ${state.config.max_upload_mb} MB`);
  }
  $("run").disabled = !file || state.busy;
}

function setBusy(busy) {
  state.busy = busy;
  $("run").disabled = busy || !state.file;
  $("cancel").hidden = !busy;
  $("cancel").disabled = false;
  $("progress").hidden = !busy;
}

function showProgress(job) {
  $("progress-bar").value = job.progress;
  const percent = Math.round(job.progress * 100);
  $("progress-text").textContent = job.cancel_requested ? `cancelling… ${percent} %` : `${job.status} · ${percent} %`;
}

async function run() {
  const form = new FormData();
  try {
    appendOptions(form);
  } catch (err) {
    showMessage(err.message);
    return;
  }
  form.append("input_scale", $("input-scale").value.trim() || "1");
  form.append("image", state.file);
  clearTimeout(state.pollTimer);
  state.job = null;
  $("results").hidden = true;
  document.body.dataset.status = "uploading";
  showMessage("");
  setBusy(true);
  $("progress-bar").removeAttribute("value");
  $("progress-text").textContent = "uploading…";
  try {
    const created = await api("/api/jobs", { method: "POST", body: form });
    state.jobId = created.id;
    poll();
  } catch (err) {
    setBusy(false);
    document.body.dataset.status = "rejected";
    showMessage(err.message);
  }
}

async function poll() {
  let job;
  try {
    job = await api(`/api/jobs/${state.jobId}`);
  } catch (err) {
    setBusy(false);
    showMessage(err.message);
    return;
  }
  showProgress(job);
  document.body.dataset.status = job.status;
  if (job.status === "done") {
    setBusy(false);
    await showResults(job);
  } else if (job.status === "failed") {
    setBusy(false);
    showMessage(`The prediction failed: ${job.error}`);
  } else if (job.status === "cancelled") {
    setBusy(false);
    showMessage("The prediction was cancelled.", "info");
  } else {
    state.pollTimer = setTimeout(poll, POLL_MS);
  }
}

async function cancel() {
  $("cancel").disabled = true;
  try {
    await api(`/api/jobs/${state.jobId}/cancel`, { method: "POST" });
  } catch (err) {
    showMessage(err.message);
  }
}

function fileUrl(job, name) {
  return `/api/jobs/${encodeURIComponent(job.id)}/files/${name}?v=${job.version}`;
}

function fillLegend(summary) {
  const rare = new Map(summary.rare_classes.map((entry) => [entry.name, entry.threshold]));
  const rows = summary.classes.map((entry) => {
    const share = summary.valid_pixels ? (100 * entry.pixels) / summary.valid_pixels : 0;
    const area = entry.area_ha === null ? "—" : entry.area_ha.toFixed(1);
    const name = element("td", { textContent: entry.name });
    if (rare.has(entry.name)) name.append(element("span", { className: "muted threshold", textContent: ` p ≥ ${rare.get(entry.name).toFixed(2)}` }));
    const row = element("tr", {}, [
      element("td", {}, [swatch(classColour(entry.name))]),
      name,
      element("td", { className: "number", textContent: area }),
      element("td", { className: "number", textContent: `${share.toFixed(2)} %` }),
    ]);
    row.classList.toggle("rare", rare.has(entry.name));
    return row;
  });
  $("legend").tBodies[0].replaceChildren(...rows);
  const topk = summary.topk;
  $("topk-info").textContent = `${topk.percent} % of valid pixels, by ${topk.score}`;
}

function fillDownloads(job) {
  const links = DOWNLOADS.filter((name) => job.files.includes(name)).map((name) => {
    const link = element("a", { className: "button", href: `${fileUrl(job, name)}&download`, textContent: name, id: `download-${name.replaceAll(".", "-")}` });
    link.setAttribute("download", "");
    return link;
  });
  $("download-links").replaceChildren(...links);
}

async function showResults(job) {
  const summary = await api(fileUrl(job, "summary.json"));
  state.job = job;
  const input = fileUrl(job, "preview_input.png");
  $("img-input").src = input;
  document.querySelectorAll("img[data-input]").forEach((img) => { img.src = input; });
  $("img-mask").src = fileUrl(job, "preview_mask.png");
  $("img-prob").src = fileUrl(job, "preview_prob.png");
  $("img-topk").src = fileUrl(job, "preview_topk.png");
  const crs = job.input.crs || "no CRS: areas not reported";
  $("input-info").textContent = `${job.input.name} · ${job.input.width} × ${job.input.height} px · ${crs}`;
  const radiometry = summary.radiometry && summary.radiometry.warning;
  $("radiometry-warning").textContent = radiometry ? `Radiometry: ${radiometry}` : "";
  $("radiometry-warning").hidden = !radiometry;
  fillLegend(summary);
  fillDownloads(job);
  $("results").hidden = false;
  $("results").dataset.version = job.version;
}

function scheduleRender() {
  if (!state.job || state.busy) return;
  clearTimeout(state.renderTimer);
  state.renderTimer = setTimeout(render, RENDER_DELAY_MS);
}

async function render() {
  const form = new FormData();
  try {
    appendOptions(form);
  } catch (err) {
    showMessage(err.message);
    return;
  }
  const sequence = ++state.renderSeq;
  $("render-state").textContent = "re-rendering…";
  try {
    const job = await api(`/api/jobs/${encodeURIComponent(state.job.id)}/render`, { method: "POST", body: form });
    if (sequence === state.renderSeq) {
      showMessage("");
      await showResults(job);
    }
  } catch (err) {
    showMessage(err.message);
  } finally {
    if (sequence === state.renderSeq) $("render-state").textContent = "";
  }
}

function wireEvents() {
  const zone = $("drop-zone");
  $("image-input").addEventListener("change", (event) => setFile(event.target.files[0]));
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("dragging");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    setFile(event.dataTransfer.files[0]);
  });
  zone.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      $("image-input").click();
    }
  });
  $("run").addEventListener("click", run);
  $("cancel").addEventListener("click", cancel);
  $("topk").addEventListener("change", scheduleRender);
  $("compare").addEventListener("input", (event) => {
    const opacity = Number(event.target.value) / 100;
    document.querySelectorAll(".stack .overlay").forEach((img) => { img.style.opacity = opacity; });
  });
  $("show-topk").addEventListener("change", (event) => { $("img-topk").hidden = !event.target.checked; });
}

async function init() {
  try {
    state.config = await api("/api/config");
  } catch (err) {
    showMessage(`Cannot load the model settings: ${err.message}`);
    return;
  }
  buildOptions();
  wireEvents();
  document.body.dataset.status = "ready";
}

document.addEventListener("DOMContentLoaded", init);
