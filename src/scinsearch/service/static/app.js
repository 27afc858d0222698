// Kiosk page: a photo, a description or a case -> /search -> warnings, suggestion, cases.
//
// Rules that keep a wrong answer off the screen and the last patient out of memory:
// - Every search and every error first clears the previous answer, suggestion and warnings; an answer
//   that arrives after a newer search (or a reset) started is dropped (`state.seq`).
// - The patient's photo is held (as the chosen File) only while its preview is on screen and the
//   answers shown are for it: a changed filter then searches the same, visible photo again (and says
//   so). A text or "more like this" search, an error, "New patient" and the idle reset drop it and
//   revoke its preview URL. Why keep it at all: narrowing a photo search by body part is the common
//   second step, and asking for a second photo of the same skin would be worse; the preview's object
//   URL holds the same bytes anyway. Its file name is never sent.
// - "New patient", and the idle reset after the server's configured time, return the page to its start.
"use strict";

import { ApiError, call, loadImage, releaseImages, saveKey } from "./api.js";
import { applyStatic, setText, startLanguage, t, useLanguage } from "./i18n.js";
import {
  card, renderAlert, renderEmpty, renderQuality, renderReferral, renderSuggestions, resultsHeading, useGlossary, valueLabel,
} from "./render.js";

const TOP_K = 12;
const FILTERS = {};  // filter name -> message-key prefix of its values, from GET /filters (the service's registry)
const $ = (id) => document.getElementById(id);

const state = {
  config: { idle_reset_seconds: 0, default_language: "en", languages: [{ code: "en", name: "English" }] },
  query: null,  // what the answer on screen is for: {kind: "photo"} | {kind: "text", text} | {kind: "like", like}
  photo: null,  // the patient's File, only while its preview is shown
  previewUrl: "",
  answer: null,  // the last answer, re-rendered when the language changes
  alert: null,  // the error code shown, if any
  status: { key: "status_start", params: {} },
  seq: 0,
  controller: null,
};

function setStatus(key, params) {
  state.status = { key: key, params: params || {} };
  if (key) setText($("status"), key, params); else $("status").textContent = "";
}

function filtersChosen() {
  return Object.keys(FILTERS).filter((name) => $("filter-" + name).value);
}

function filterQuery(extra) {
  const query = new URLSearchParams(extra || {});
  for (const name of filtersChosen()) query.append(name, $("filter-" + name).value);
  return query;
}

function showFilterCount() {
  const count = filtersChosen().length;
  $("filter-count").textContent = count ? t("filter_count", { n: count }) : "";
  $("clear-filters").hidden = count === 0;
}

/** Take the previous answer off the screen (and stop waiting for one): always the first step. */
function clearAnswer() {
  state.seq += 1;
  if (state.controller) state.controller.abort();
  state.controller = null;
  state.answer = null;
  state.alert = null;
  renderAlert(null);
  for (const id of ["refer", "quality", "empty", "suggestions", "results-section"]) $(id).hidden = true;
  $("refer-body").replaceChildren();
  $("quality-list").replaceChildren();
  $("suggestions-body").replaceChildren();
  $("results").replaceChildren();
  if ($("viewer").open) $("viewer").close();
  releaseImages();
}

function forgetPhoto() {
  state.photo = null;
  if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
  state.previewUrl = "";
  $("preview").removeAttribute("src");
  $("preview-box").hidden = true;
}

function showError(code) {
  clearAnswer();
  forgetPhoto();
  state.query = null;
  state.alert = code;
  renderAlert(code);
  setStatus("");
  if (code === "unauthorized") { $("key-form").hidden = false; $("api-key").focus(); }
}

function request(query, signal) {
  if (query.kind === "photo") {
    const form = new FormData();
    form.append("photo", state.photo, "photo");  // never the file's own name: it may name the patient
    return call("/search?" + filterQuery({ top_k: TOP_K }), { method: "POST", body: form, signal: signal });
  }
  if (query.kind === "text") {
    return call("/search/text?" + filterQuery(), { method: "POST", signal: signal,
      body: JSON.stringify({ text: query.text, top_k: TOP_K }), headers: { "Content-Type": "application/json" } });
  }
  return call("/images/" + encodeURIComponent(query.like.image_id) + "/similar?" + filterQuery({ top_k: TOP_K }),
    { method: "GET", signal: signal });
}

async function search(query, statusKey) {
  clearAnswer();
  if (query.kind !== "photo") forgetPhoto();
  state.query = query;
  const seq = state.seq;
  const controller = new AbortController();
  state.controller = controller;
  setStatus(statusKey || "status_searching");
  $("results-section").setAttribute("aria-busy", "true");
  try {
    const answer = await request(query, controller.signal);
    if (seq !== state.seq) return;
    state.answer = answer;
    renderAnswer();
    if (query.kind === "like") $((answer.results || []).length ? "results-heading" : "empty-heading").focus();
    else bringIntoView("status");
  } catch (error) {
    if (seq !== state.seq || (error && error.name === "AbortError")) return;
    const code = error instanceof ApiError ? error.code : "internal";
    showError(code);
    if (code !== "unauthorized") bringIntoView("alert");
  } finally {
    $("results-section").removeAttribute("aria-busy");
    if (seq === state.seq) state.controller = null;
  }
}

/** After a photo or text search: the answer's first line (status, or the error) moves to the top of the
 * screen, under the sticky banner, and takes the focus, so the warnings, suggestion and cases follow it on
 * screen and a screen reader reads it out. */
function bringIntoView(id) {
  $(id).focus({ preventScroll: true });
  $(id).scrollIntoView({ block: "start" });
}

function renderAnswer() {
  const answer = state.answer;
  if (!answer || !state.query) return;
  const results = answer.results || [];
  renderReferral(answer.refer);
  renderQuality(answer.quality);
  if (!results.length) {
    renderEmpty(state.query.kind, filtersChosen().length > 0);
    setStatus("status_empty");
    return;
  }
  renderSuggestions(answer.suggestions);
  const actions = { loadImage: loadImage, showImage: showImage, searchLike: searchLike };
  $("results").replaceChildren(...results.map((result, index) => card(result, index + 1, actions)));
  $("results-heading").textContent = resultsHeading(state.query.kind, results.length, state.query.like);
  $("results-section").hidden = false;
  if (answer.licence) $("licence").textContent = answer.licence;
  setStatus("status_results", { n: results.length });
}

function searchLike(result, rank) {
  return search({ kind: "like", like: { image_id: result.image_id, rank: rank, condition: result.condition } });
}

function showImage(result, name) {
  $("viewer-title").textContent = name;
  loadImage($("viewer-image"), result.image_url);
  $("viewer-caption").textContent = result.description || "";
  $("viewer").showModal();
}

function onPhoto(event) {
  const file = event.target.files && event.target.files[0];
  event.target.value = "";  // the input lets go of the file
  if (!file) return;
  clearAnswer();
  forgetPhoto();
  state.photo = file;
  state.previewUrl = URL.createObjectURL(file);  // shown on this screen only; revoked by forgetPhoto
  $("preview").src = state.previewUrl;
  $("preview-box").hidden = false;
  search({ kind: "photo" });
}

function openPhotoPicker() {
  $($("take-photo").hidden ? "file" : "camera").click();
}

function onFilterChange() {
  showFilterCount();
  if (!state.query) return;
  if (state.query.kind === "photo" && !state.photo) { state.query = null; return; }
  search(state.query, state.query.kind === "photo" ? "status_searching_photo_again" : "status_searching");
}

function clearFilters() {
  for (const name of Object.keys(FILTERS)) $("filter-" + name).value = "";
  showFilterCount();
}

function onEmptyAction() {
  const action = $("empty-action").dataset.action;
  if (action === "clear_filters_search") { clearFilters(); onFilterChange(); return; }
  if (action === "empty_reword") { $("text").focus(); return; }
  openPhotoPicker();
}

/** Back to a clean page for the next patient: photo, preview, answer, warnings, filters, text, errors. */
function resetPage(statusKey) {
  clearAnswer();
  forgetPhoto();
  state.query = null;
  $("text").value = "";
  clearFilters();
  $("filters").open = false;
  $("key-form").hidden = true;
  setStatus(statusKey);
  window.scrollTo(0, 0);
}

function pageInUse() {
  return Boolean(state.query || state.photo || state.answer || state.alert || $("text").value ||
    filtersChosen().length || $("viewer").open);
}

/** Reset after the configured idle time (GET /config; 0 = never); any touch or key restarts the clock. */
function watchIdle(seconds) {
  if (!seconds || seconds <= 0) return;
  let timer = null;
  const restart = () => {
    clearTimeout(timer);
    timer = setTimeout(() => { if (pageInUse()) resetPage("status_idle_reset"); }, seconds * 1000);
  };
  for (const name of ["pointerdown", "keydown", "input", "wheel", "touchstart", "scroll"]) {
    window.addEventListener(name, restart, { capture: true, passive: true });
  }
  restart();
}

/** Hide "Take photo" when the browser says there is no camera. When it cannot say (plain http on
 * another machine, an old browser), keep it: a phone then still opens its camera through `capture`. */
async function detectCamera() {
  const media = navigator.mediaDevices;
  if (!media || !media.enumerateDevices) return;
  try {
    const devices = await media.enumerateDevices();
    const camera = devices.some((device) => device.kind === "videoinput");
    $("take-photo").hidden = !camera;
    $("choose-file").classList.toggle("primary", !camera);
  } catch (error) { /* unknown: keep the button */ }
}

function labelChoices() {
  for (const [name, kind] of Object.entries(FILTERS)) {
    for (const option of $("filter-" + name).options) {
      if (option.value) option.textContent = valueLabel(kind, option.value);
    }
  }
}

/** One menu: its title, "Any", and the values the service lists; a change searches again. */
function filterMenu(menu) {
  const label = document.createElement("label");
  const title = document.createElement("span");
  title.dataset.i18n = "filter_" + menu.name;
  const select = document.createElement("select");
  select.id = "filter-" + menu.name;
  select.name = menu.name;
  select.className = "select";
  const any = document.createElement("option");
  any.value = "";
  any.dataset.i18n = "any";
  select.appendChild(any);
  for (const value of menu.values || []) {
    const option = document.createElement("option");
    option.value = value;
    select.appendChild(option);
  }
  select.addEventListener("change", onFilterChange);
  label.append(title, select);
  return label;
}

async function loadChoices() {
  const body = await call("/filters", { method: "GET" });
  for (const menu of body.menus || []) {
    FILTERS[menu.name] = menu.labels;
    $("filter-grid").appendChild(filterMenu(menu));
  }
  applyStatic($("filter-grid"));
  useGlossary(body.glossary);
  labelChoices();
  if (body.licence) $("licence").textContent = body.licence;
  if (body.max_text_chars) $("text").maxLength = body.max_text_chars;
}

async function setLanguage(code, remember) {
  await useLanguage(code, remember);
  $("language").value = document.documentElement.lang;
  applyStatic(document);
  $("text-english").hidden = document.documentElement.lang.split("-")[0] === "en";
  labelChoices();
  showFilterCount();
  setStatus(state.status.key, state.status.params);
  if (state.alert) renderAlert(state.alert);
  if (state.answer) renderAnswer();
}

function listen() {
  $("camera").addEventListener("change", onPhoto);
  $("file").addEventListener("change", onPhoto);
  $("take-photo").addEventListener("click", () => $("camera").click());
  $("choose-file").addEventListener("click", () => $("file").click());
  $("new-patient").addEventListener("click", () => resetPage("status_reset"));
  $("clear-filters").addEventListener("click", () => { clearFilters(); onFilterChange(); });
  $("empty-action").addEventListener("click", onEmptyAction);
  $("language").addEventListener("change", () => setLanguage($("language").value, true));
  $("viewer").addEventListener("click", (event) => { if (event.target === $("viewer")) $("viewer").close(); });
  $("viewer").addEventListener("close", () => { $("viewer-image").removeAttribute("src"); });
  $("text-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("text").value.trim();
    if (text) search({ kind: "text", text: text }); else showError("empty_text");
  });
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    saveKey($("api-key").value);
    $("key-form").hidden = true;
    resetPage("status_start");
  });
  if (navigator.mediaDevices && navigator.mediaDevices.addEventListener) {
    navigator.mediaDevices.addEventListener("devicechange", detectCamera);
  }
}

async function init() {
  listen();
  state.config = await call("/config", { method: "GET" }).catch(() => state.config);
  const select = $("language");
  select.replaceChildren(...state.config.languages.map((item) => {
    const option = document.createElement("option");
    option.value = item.code;
    option.textContent = item.name;
    option.lang = item.code;
    return option;
  }));
  await setLanguage(startLanguage(state.config.languages, state.config.default_language), false);
  await Promise.all([
    loadChoices().catch((error) => showError(error instanceof ApiError ? error.code : "internal")),
    detectCamera(),
  ]);
  showFilterCount();
  watchIdle(state.config.idle_reset_seconds);
  document.documentElement.dataset.ready = "true";
}

init();
