// Kiosk page logic: photo or text -> /search -> cards and suggestions. No external resources.
"use strict";

const TOP_K = 12;
const KEY_STORE = "scinsearch-api-key";
const FILTERS = ["fitzpatrick", "body_parts", "age_groups"];
const $ = (id) => document.getElementById(id);
let lastRequest = null;

function apiKey() { return sessionStorage.getItem(KEY_STORE) || ""; }

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (apiKey()) h["X-API-Key"] = apiKey();
  return h;
}

function humanize(value) {
  if (value === null || value === undefined || value === "") return "";
  const text = String(value);
  const fst = text.match(/^FST([1-6])$/);
  if (fst) return "Type " + ["I", "II", "III", "IV", "V", "VI"][Number(fst[1]) - 1];
  if (text === "NONE_IDENTIFIED") return "Not identified";
  const age = text.match(/^AGE_(\d+)_TO_(\d+)$/);
  if (age) return age[1] + "–" + age[2];
  if (text === "AGE_80_OR_ABOVE") return "80+";
  if (text === "AGE_UNKNOWN") return "Unknown age";
  const words = text.replace(/_/g, " ").toLowerCase();
  return words.charAt(0).toUpperCase() + words.slice(1);
}

function setStatus(message, isError) {
  const status = $("status");
  status.textContent = message;
  status.classList.toggle("error", Boolean(isError));
}

function filterQuery(extra) {
  const query = new URLSearchParams(extra || {});
  let count = 0;
  for (const name of FILTERS) {
    const value = $("filter-" + name).value;
    if (value) { query.append(name, value); count += 1; }
  }
  $("filter-count").textContent = count ? "(" + count + " on)" : "";
  return query;
}

async function call(url, options) {
  const response = await fetch(url, Object.assign({}, options, { headers: headers(options && options.headers) }));
  if (response.status === 401) {
    $("key-form").hidden = false;
    $("api-key").focus();
    throw new Error("This kiosk needs its access key: type it above.");
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.detail || ("Request failed (" + response.status + ")"));
  return body;
}

async function run(request) {
  lastRequest = request;
  setStatus("Searching…");
  document.body.setAttribute("aria-busy", "true");
  try {
    const body = await request();
    render(body);
  } catch (error) {
    setStatus(error.message, true);
  } finally {
    document.body.removeAttribute("aria-busy");
  }
}

function searchPhoto(file) {
  // The closure re-reads the filters, so changing one re-runs the same search.
  return run(() => {
    const form = new FormData();
    form.append("photo", file, file.name || "photo.jpg");
    return call("/search?" + filterQuery({ top_k: TOP_K }), { method: "POST", body: form });
  });
}

function searchText(text) {
  const payload = JSON.stringify({ text: text, top_k: TOP_K });
  return run(() => call("/search/text?" + filterQuery(), {
    method: "POST", body: payload, headers: { "Content-Type": "application/json" } }));
}

function searchLike(imageId) {
  window.scrollTo({ top: 0, behavior: "smooth" });
  return run(() => call("/images/" + encodeURIComponent(imageId) + "/similar?" + filterQuery({ top_k: TOP_K }),
    { method: "GET" }));
}

function loadImage(img, url) {
  // With an access key, images come through fetch (an <img> cannot send the header).
  if (!apiKey()) { img.src = url; return; }
  fetch(url, { headers: headers() })
    .then((r) => (r.ok ? r.blob() : Promise.reject(new Error(String(r.status)))))
    .then((blob) => { img.src = URL.createObjectURL(blob); })
    .catch(() => { img.alt = "Image unavailable"; });
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function renderSuggestions(suggestions) {
  const box = $("suggestions");
  box.replaceChildren();
  box.hidden = false;
  box.appendChild(element("h2", "", "What the similar cases suggest"));
  if (!suggestions || !suggestions.confident || !suggestions.conditions.length) {
    box.appendChild(element("p", "abstain", humanizeReason(suggestions)));
  } else {
    const list = element("ol");
    for (const item of suggestions.conditions) {
      const li = element("li");
      li.appendChild(element("strong", "", item.condition));
      li.appendChild(document.createTextNode(" "));
      li.appendChild(element("span", "evidence",
        Math.round(item.score * 100) + "% of the weighted vote; in " + item.support + " of " +
        suggestions.neighbours + " similar cases; closest similarity " + item.best_similarity.toFixed(2)));
      list.appendChild(li);
    }
    box.appendChild(list);
    box.appendChild(element("p", "evidence", suggestions.reason));
  }
  if (suggestions && suggestions.method) box.appendChild(element("p", "method", "Method: " + suggestions.method + "."));
}

function humanizeReason(suggestions) {
  const reason = (suggestions && suggestions.reason) || "no confident suggestion";
  return reason.charAt(0).toUpperCase() + reason.slice(1) + ". Look at the cases below and decide.";
}

function card(result) {
  const node = element("article", "card");
  node.dataset.imageId = result.image_id;
  const open = element("button", "photo");
  open.type = "button";
  open.setAttribute("aria-label", "Show the full photo");
  const img = element("img");
  img.alt = (result.condition || "Unlabelled case") + " (SCIN case photo)";
  img.loading = "lazy";
  loadImage(img, result.thumbnail_url);
  open.appendChild(img);
  open.addEventListener("click", () => showImage(result));
  node.appendChild(open);
  const body = element("div", "body");
  body.appendChild(element("div", "condition", result.condition || "No dermatologist label"));
  body.appendChild(element("div", "meta score", "Similarity " + Number(result.score).toFixed(2)));
  const skin = result.dermatologist_fitzpatrick_skin_type || result.fitzpatrick_skin_type;
  body.appendChild(element("div", "meta", "Skin type: " + (humanize(skin) || "unknown")));
  const parts = (result.body_parts || []).map(humanize).join(", ");
  body.appendChild(element("div", "meta", "Body part: " + (parts || "unknown")));
  if (result.age_group) body.appendChild(element("div", "meta", "Age: " + humanize(result.age_group)));
  const more = element("button", "button", "More like this");
  more.type = "button";
  more.addEventListener("click", () => searchLike(result.image_id));
  body.appendChild(more);
  node.appendChild(body);
  return node;
}

function showImage(result) {
  loadImage($("viewer-image"), result.image_url);
  $("viewer-image").alt = result.condition || "SCIN case photo";
  $("viewer-caption").textContent = (result.description || result.condition || "");
  $("viewer").showModal();
}

function render(body) {
  const results = body.results || [];
  renderSuggestions(body.suggestions);
  $("results").replaceChildren(...results.map(card));
  if (body.disclaimer) $("disclaimer-text").textContent = body.disclaimer;
  if (body.licence) $("licence").textContent = body.licence;
  setStatus(results.length ? results.length + " similar cases" : "No similar cases match these filters.");
}

async function loadChoices() {
  try {
    const body = await call("/filters", { method: "GET" });
    for (const name of FILTERS) {
      const select = $("filter-" + name);
      for (const value of (body.choices && body.choices[name]) || []) {
        const option = element("option", "", humanize(value));
        option.value = value;
        select.appendChild(option);
      }
    }
    if (body.licence) $("licence").textContent = body.licence;
    if (body.max_text_chars) $("text").maxLength = body.max_text_chars;
  } catch (error) {
    setStatus(error.message, true);
  }
}

function onPhoto(event) {
  const file = event.target.files && event.target.files[0];
  if (!file) return;
  const preview = $("preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(file);  // shown locally; nothing is kept
  $("preview-box").hidden = false;
  searchPhoto(file);
  event.target.value = "";
}

function init() {
  $("camera").addEventListener("change", onPhoto);
  $("file").addEventListener("change", onPhoto);
  $("text-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("text").value.trim();
    if (text) searchText(text); else setStatus("Type a description first.", true);
  });
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_STORE, $("api-key").value);
    $("key-form").hidden = true;
    if (lastRequest) run(lastRequest); else loadChoices();
  });
  for (const name of FILTERS) {
    $("filter-" + name).addEventListener("change", () => { filterQuery(); if (lastRequest) run(lastRequest); });
  }
  loadChoices();
}

document.addEventListener("DOMContentLoaded", init);
