// Turn one search answer into the page's sections, in the current language. No state lives here:
// app.js keeps the answer and calls these again when the language changes.
"use strict";

import { currentLanguage, has, setText, t, translate } from "./i18n.js";

const $ = (id) => document.getElementById(id);
// SCIN label -> {language -> plain name}: the service's glossary (GET /filters), set once at start.
const GLOSSARY = {};

export function useGlossary(glossary) {
  Object.assign(GLOSSARY, glossary || {});
}

export function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** SCIN's English labels (condition names) stay English: marked so a screen reader says them so. */
function english(tag, className, text) {
  const node = element(tag, className, text);
  if (currentLanguage() !== "en") node.lang = "en";
  return node;
}

/** A condition as SCIN labels it, with its plain name from the glossary in the page's language (English
 * when the glossary has none in it) first, where the glossary has one; the raw label is always shown. */
export function conditionName(tag, className, label) {
  const names = GLOSSARY[label] || {};
  const plain = names[currentLanguage()] || names.en;
  if (!plain) return english(tag, className, label);
  const node = element(tag, className);
  const name = element("span", "plain", plain);
  if (!names[currentLanguage()] && currentLanguage() !== "en") name.lang = "en";
  node.append(name, document.createTextNode(" "), english("span", "raw", "(" + label + ")"));
  return node;
}

function humanize(text) {
  const words = String(text).replace(/_/g, " ").toLowerCase();
  return words.charAt(0).toUpperCase() + words.slice(1);
}

/** A filter or payload value in words: FST3 -> "Fitzpatrick III", AGE_30_TO_39 -> "30 to 39 years". */
export function valueLabel(kind, value) {
  if (value === null || value === undefined || value === "") return "";
  const key = kind + "_" + String(value);
  return has(key) ? t(key) : humanize(value);
}

// Why suggest.py abstained, recognised from its stable English reasons, in the page's words.
const ABSTAIN_REASONS = [
  ["suggestions are off", "abstain_off"],
  ["no similar cases were found", "abstain_no_neighbours"],
  ["none of the similar cases has a dermatologist label", "abstain_no_labels"],
  ["not similar enough", "abstain_not_similar"],
  ["disagree", "abstain_disagree"],
];

function abstainKey(reason) {
  const found = ABSTAIN_REASONS.find(([fragment]) => String(reason || "").includes(fragment));
  return found ? found[1] : "abstain_generic";
}

export function renderSuggestions(suggestions) {
  const box = $("suggestions-body");
  box.replaceChildren();
  const confident = suggestions && suggestions.confident && (suggestions.conditions || []).length;
  if (!confident) {
    box.appendChild(element("p", "abstain", t(abstainKey(suggestions && suggestions.reason))));
    box.appendChild(element("p", "evidence", t("abstain_then")));
  } else {
    const list = element("ol");
    for (const item of suggestions.conditions) {
      const li = element("li");
      li.appendChild(conditionName("strong", "", item.condition));
      li.appendChild(document.createTextNode(" "));
      li.appendChild(element("span", "evidence", t("suggestion_evidence", {
        support: item.support, n: suggestions.neighbours, share: Math.round(item.score * 100) })));
      list.appendChild(li);
    }
    box.appendChild(list);
    box.appendChild(element("p", "evidence", t("suggestion_then")));
  }
  box.appendChild(element("p", "method", t("suggestion_method")));
  $("suggestions").hidden = false;
}

/** Each `warn` check of the answer's `quality`, in the catalogue's words (by `code`), else the server's. */
export function renderQuality(quality) {
  const warnings = ((quality && quality.checks) || []).filter((check) => check && check.verdict === "warn");
  const list = $("quality-list");
  list.replaceChildren();
  for (const check of warnings) {
    const li = element("li", "warning");
    li.dataset.code = check.code || "";
    const known = check.code && has("quality_" + check.code);
    const message = element("strong", "", known ? t("quality_" + check.code) : (check.reason || t("quality_generic")));
    const advice = element("span", "advice", known ? t("quality_" + check.code + "_advice") : (check.advice || ""));
    if (!known && currentLanguage() !== "en") { message.lang = "en"; advice.lang = "en"; }
    li.append(message, document.createTextNode(" "), advice);
    list.appendChild(li);
  }
  if (warnings.length) list.appendChild(element("li", "still", t("quality_still_viewable")));
  $("quality").hidden = warnings.length === 0;
}

/** The referral notice (the answer's `refer`): shown above the results whether or not a condition is suggested. */
export function renderReferral(refer) {
  const box = $("refer-body");
  box.replaceChildren();
  if (!refer || !(refer.conditions || []).length) { $("refer").hidden = true; return; }
  box.appendChild(element("p", "", t("refer_text", { n: refer.cases, of: refer.of })));
  const list = element("ul");
  for (const item of refer.conditions) {
    const li = element("li");
    li.appendChild(conditionName("strong", "", item.condition));
    li.appendChild(document.createTextNode(" "));
    li.appendChild(element("span", "evidence", t("refer_cases", { n: item.cases })));
    list.appendChild(li);
  }
  box.appendChild(list);
  box.appendChild(element("p", "then", t("refer_then")));
  $("refer").hidden = false;
}

/** Similarity as its named band, the number behind a details control. */
function similarity(result) {
  const node = meta(t("similarity"), t("band_" + (result.similarity_band || "distant")));
  const details = element("details", "score");
  details.appendChild(element("summary", "", t("similarity_number")));
  details.appendChild(element("span", "", Number(result.score).toFixed(2)));
  node.appendChild(details);
  return node;
}

/** Skin type as the numeral and in words: "Fitzpatrick III: sometimes burns, tans gradually". */
function skinType(result) {
  const skin = result.dermatologist_fitzpatrick_skin_type || result.fitzpatrick_skin_type;
  const label = valueLabel("fitzpatrick", skin);
  if (!label) return t("not_recorded");
  return has("skin_words_" + skin) ? label + ": " + t("skin_words_" + skin) : label;
}

function cardName(rank, result) {
  return t("card_name", { rank: rank, condition: result.condition || t("unlabelled") });
}

function meta(label, value) {
  const node = element("div", "meta");
  node.appendChild(element("span", "meta-label", label + ": "));
  node.appendChild(document.createTextNode(value));
  return node;
}

/** One result card; its buttons are named by the case ("… case 3, Eczema") so a list of twelve is usable. */
export function card(result, rank, actions) {
  const node = element("li", "card");
  node.dataset.imageId = result.image_id;
  const name = cardName(rank, result);
  const open = element("button", "photo");
  open.type = "button";
  open.setAttribute("aria-label", t("card_open_photo", { name: name }));
  const img = element("img");
  img.alt = "";
  img.loading = "lazy";
  actions.loadImage(img, result.thumbnail_url);
  open.appendChild(img);
  open.addEventListener("click", () => actions.showImage(result, name));
  node.appendChild(open);
  const body = element("div", "body");
  const title = element("h3", "condition");
  title.appendChild(element("span", "rank", "#" + rank + " "));
  title.appendChild(result.condition ? conditionName("span", "", result.condition) : element("span", "", t("unlabelled")));
  body.appendChild(title);
  body.appendChild(similarity(result));
  body.appendChild(meta(t("skin_type"), skinType(result)));
  const parts = (result.body_parts || []).map((part) => valueLabel("body_part", part)).join(", ");
  body.appendChild(meta(t("body_part"), parts || t("not_recorded")));
  const age = result.age_group && result.age_group !== "AGE_UNKNOWN" ? valueLabel("age", result.age_group) : "";
  body.appendChild(meta(t("age"), age || t("not_recorded")));
  const more = element("button", "button more");
  more.type = "button";
  more.appendChild(element("span", "", t("more_like_this")));
  more.appendChild(element("span", "visually-hidden", ": " + name));
  more.addEventListener("click", () => actions.searchLike(result, rank));
  body.appendChild(more);
  node.appendChild(body);
  return node;
}

export function resultsHeading(kind, count, like) {
  if (kind === "like") return t("results_like", { n: count, name: cardName(like.rank, like) });
  return t(kind === "text" ? "results_text" : "results_photo", { n: count });
}

/** The honest "nothing found": what happened and the way on (clear the filters, or retake / reword). */
export function renderEmpty(kind, filtersSet) {
  const reason = filtersSet ? "empty_filters" : "empty_" + kind;
  setText($("empty-text"), reason);
  const action = filtersSet ? "clear_filters_search" : kind === "text" ? "empty_reword" : "retake_photo";
  setText($("empty-action"), action);
  $("empty-action").dataset.action = action;
  $("empty").hidden = false;
}

/** Plain advice for an API error code (unknown codes get the general advice). */
export function renderAlert(code) {
  const box = $("alert");
  box.replaceChildren();
  delete box.dataset.code;
  if (!code) return;
  const key = has("error_" + code) ? "error_" + code : "error_bad_request";
  const found = translate(key);
  const message = element("p", "", found.text);
  if (found.lang !== currentLanguage()) message.lang = found.lang;
  box.appendChild(message);
  box.dataset.code = code;
}
