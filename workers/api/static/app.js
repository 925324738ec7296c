// The search page: plain JavaScript, no build step. Talks to the /v1 API only.
"use strict";

const $ = (id) => document.getElementById(id);
const STATS_EVERY_MS = 3000;
const imageUrls = new Map(); // item id -> object URL (or null when the item has no image)

function token() {
  return $("token").value.trim();
}

function headers(extra = {}) {
  const h = { ...extra };
  if (token()) h.Authorization = `Bearer ${token()}`;
  return h;
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers(options.headers) });
  if (!response.ok) {
    let detail = `${response.status} ${response.statusText}`;
    try {
      detail = (await response.json()).detail || detail;
    } catch (_) { /* not JSON */ }
    const error = new Error(detail);
    error.status = response.status;
    throw error;
  }
  return response;
}

function status(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

// --- statistics ------------------------------------------------------------------------

function seconds(value) {
  if (value === null || value === undefined) return "–";
  return value < 1 ? `${Math.round(value * 1000)} ms` : `${value.toFixed(1)} s`;
}

async function refreshStats() {
  try {
    const stats = await (await api("/v1/stats")).json();
    $("stat-model").textContent = stats.serving ?? "none";
    $("stat-items").textContent = stats.items ?? "–";
    $("stat-epoch").textContent = stats.index_epoch ?? "–";
    $("stat-lag").textContent = stats.source_lag_events ?? "–";
    const f = stats.freshness || {};
    $("stat-freshness").textContent = `${seconds(f.p50_s)} / ${seconds(f.p99_s)}`;
    $("stat-snapshot").textContent = seconds(stats.snapshot_age_s);
    const cache = stats.cache || {};
    $("stat-cache").textContent =
      cache.backend === "redis" ? (cache.available ? "redis" : "redis (down)") : "off";
  } catch (error) {
    $("stat-model").textContent = error.status === 401 ? "token?" : "unreachable";
  }
}

// --- images ----------------------------------------------------------------------------

async function itemImage(id) {
  if (imageUrls.has(id)) return imageUrls.get(id);
  let url = null;
  try {
    const response = await api(`/v1/items/${encodeURIComponent(id)}/image`);
    url = URL.createObjectURL(await response.blob());
  } catch (_) {
    url = null; // no image payload, or the event left the items topic
  }
  imageUrls.set(id, url);
  return url;
}

function placeholder(text) {
  const div = document.createElement("div");
  div.className = "thumb none";
  div.textContent = text;
  return div;
}

// --- results ---------------------------------------------------------------------------

function showQuery(src, caption) {
  $("query").hidden = !src;
  if (src) $("query-image").src = src;
  $("query-caption").textContent = caption;
}

function showPrediction(result) {
  const p = $("prediction");
  p.hidden = false;
  if (!result.known) {
    p.textContent = `Predicted: unknown (no neighbour within ${result.threshold.toFixed(3)})`;
    return;
  }
  const top = result.votes[0];
  p.textContent = `Predicted: ${result.label} (${top.votes} of ${result.neighbors.length} votes)`;
}

async function showResults(lookup, cacheStatus) {
  const list = $("results");
  list.replaceChildren();
  $("result-meta").textContent =
    `model ${lookup.model_version} · epoch ${lookup.index_epoch} · cache ${cacheStatus}`;
  for (const neighbor of lookup.neighbors) {
    const li = document.createElement("li");
    li.dataset.id = neighbor.id;
    const holder = placeholder("…");
    li.append(holder);
    for (const [cls, text] of [
      ["id", neighbor.id],
      ["label", neighbor.label === null ? "no label" : `label ${neighbor.label}`],
      ["distance", `d = ${neighbor.distance.toFixed(4)}`],
    ]) {
      const div = document.createElement("div");
      div.className = cls;
      div.textContent = text;
      li.append(div);
    }
    list.append(li);
    itemImage(neighbor.id).then((url) => {
      if (!url) {
        holder.textContent = "no image";
        return;
      }
      const img = document.createElement("img");
      img.className = "thumb";
      img.alt = `item ${neighbor.id}`;
      img.src = url;
      holder.replaceWith(img);
    });
  }
  if (!lookup.neighbors.length) status("No neighbours: the index is empty or nothing matched.");
}

async function search(query, caption, previewUrl) {
  const k = Math.max(1, Number($("k").value) || 10);
  status("Searching…");
  showQuery(previewUrl, caption);
  try {
    const body = JSON.stringify({ ...query, k });
    const json = { "Content-Type": "application/json" };
    const response = await api("/v1/lookup", { method: "POST", headers: json, body });
    const lookup = await response.json();
    await showResults(lookup, response.headers.get("X-Cache") || "?");
    const classified = await api("/v1/classify", { method: "POST", headers: json, body });
    showPrediction(await classified.json());
    status(`${lookup.neighbors.length} neighbours.`);
  } catch (error) {
    $("results").replaceChildren();
    $("prediction").hidden = true;
    status(error.message, true);
  }
}

// --- inputs ----------------------------------------------------------------------------

function readAsDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

async function searchFile(file) {
  if (!file) return;
  const dataUrl = await readAsDataUrl(file);
  await search({ image: dataUrl }, `uploaded: ${file.name}`, dataUrl);
}

async function searchRandom() {
  status("Picking an item…");
  try {
    const sample = await (await api("/v1/items?sample=1")).json();
    if (!sample.items.length) {
      status("The index is empty.", true);
      return;
    }
    const item = sample.items[0];
    const url = await itemImage(item.id);
    const label = item.label === null ? "" : `, label ${item.label}`;
    await search({ id: item.id }, `item ${item.id}${label}`, url);
  } catch (error) {
    status(error.message, true);
  }
}

function setup() {
  $("token").value = localStorage.getItem("simstream-token") || "";
  $("token").addEventListener("change", () => {
    localStorage.setItem("simstream-token", token());
    imageUrls.clear();
    refreshStats();
  });
  $("file").addEventListener("change", (event) => searchFile(event.target.files[0]));
  $("random").addEventListener("click", searchRandom);
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    searchFile(event.dataTransfer.files[0]);
  });
  refreshStats();
  setInterval(refreshStats, STATS_EVERY_MS);
}

setup();
