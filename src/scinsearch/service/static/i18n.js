// Message catalogues: static/i18n/<language>.json, one file per language, English complete.
// A missing key in another language falls back to English (and is marked lang="en" where shown),
// so a half-translated catalogue never leaves a blank on the page.
"use strict";

const LANGUAGE_STORE = "scinsearch-language";
const catalogues = {};  // code -> catalogue
let language = "en";

async function fetchCatalogue(code) {
  if (!catalogues[code]) {
    const response = await fetch("/static/i18n/" + encodeURIComponent(code) + ".json");
    if (!response.ok) throw new Error("no catalogue for " + code);
    catalogues[code] = await response.json();
  }
  return catalogues[code];
}

export function currentLanguage() { return language; }

export function rememberedLanguage() {
  try { return localStorage.getItem(LANGUAGE_STORE) || ""; } catch (error) { return ""; }
}

/** The language to start in: the one chosen on this kiosk before, else the browser's, else the default. */
export function startLanguage(available, fallback) {
  const codes = available.map((item) => item.code);
  const wanted = [rememberedLanguage(), ...(navigator.languages || [])];
  for (const tag of wanted) {
    if (!tag) continue;
    if (codes.includes(tag)) return tag;
    const base = tag.split("-")[0].toLowerCase();
    if (codes.includes(base)) return base;
  }
  return codes.includes(fallback) ? fallback : (codes[0] || "en");
}

/** Load English (the fallback) and `code`; remember the choice on this kiosk. */
export async function useLanguage(code, remember) {
  await fetchCatalogue("en");
  try {
    await fetchCatalogue(code);
    language = code;
  } catch (error) {
    language = "en";
  }
  if (remember) {
    try { localStorage.setItem(LANGUAGE_STORE, language); } catch (error) { /* private mode: not remembered */ }
  }
  document.documentElement.lang = language;
  return language;
}

function lookup(key) {
  const own = catalogues[language] && catalogues[language][key];
  if (own !== undefined && own !== "") return { value: own, lang: language };
  const english = catalogues.en && catalogues.en[key];
  return { value: english === undefined ? key : english, lang: "en" };
}

function fill(text, params) {
  return String(text).replace(/\{(\w+)\}/g, (match, name) =>
    (params && params[name] !== undefined ? String(params[name]) : match));
}

/** The message for `key` in the current language, `{name}` filled from `params`; a count `n`
 * picks the plural form ({"one": ..., "other": ...}) by the language's own plural rules. */
export function t(key, params) {
  return translate(key, params).text;
}

/** Like t(), with the language the text is actually in (for a lang attribute). */
export function translate(key, params) {
  const found = lookup(key);
  let value = found.value;
  if (value && typeof value === "object") {
    const n = params && typeof params.n === "number" ? params.n : 0;
    value = value[new Intl.PluralRules(found.lang).select(n)] || value.other || "";
  }
  return { text: fill(value, params), lang: found.lang };
}

export function has(key) {
  return lookup(key).value !== key;
}

/** Put a translated text into a node, marking its language when it fell back to English. */
export function setText(node, key, params) {
  const found = translate(key, params);
  node.textContent = found.text;
  if (found.lang !== language) node.lang = found.lang; else node.removeAttribute("lang");
}

/** Translate the page's fixed texts: data-i18n (text), data-i18n-placeholder, data-i18n-alt. */
export function applyStatic(root) {
  for (const node of root.querySelectorAll("[data-i18n]")) setText(node, node.dataset.i18n);
  for (const node of root.querySelectorAll("[data-i18n-placeholder]")) {
    node.placeholder = t(node.dataset.i18nPlaceholder);
  }
  for (const node of root.querySelectorAll("[data-i18n-alt]")) node.alt = t(node.dataset.i18nAlt);
}
