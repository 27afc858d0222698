// Talking to the service: the access key, errors as machine codes, and images that may need the key.
"use strict";

const KEY_STORE = "scinsearch-api-key";
const blobUrls = new Set();  // object URLs made for images, released on every clear

export class ApiError extends Error {
  /** `code` is the service's machine code (scinsearch/errors.py), or "offline" when it cannot be reached. */
  constructor(code, detail) {
    super(detail || code);
    this.code = code;
  }
}

export function apiKey() {
  try { return sessionStorage.getItem(KEY_STORE) || ""; } catch (error) { return ""; }
}

export function saveKey(key) {
  try { sessionStorage.setItem(KEY_STORE, key); } catch (error) { /* not remembered */ }
}

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (apiKey()) h["X-API-Key"] = apiKey();
  return h;
}

const CODE_FOR_STATUS = { 401: "unauthorized", 404: "not_found", 408: "timeout", 413: "upload_too_large",
  415: "unsupported_format", 500: "internal", 503: "overloaded" };

/** JSON from the service, or an ApiError carrying the service's `code` (its precise `detail` kept for logs). */
export async function call(url, options) {
  let response;
  try {
    response = await fetch(url, Object.assign({}, options, { headers: headers(options && options.headers) }));
  } catch (error) {
    if (error && error.name === "AbortError") throw error;
    throw new ApiError("offline", String(error));
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new ApiError(body.code || CODE_FOR_STATUS[response.status] || "bad_request", body.detail);
  }
  return body;
}

/** Show a stored image; with an access key it comes through fetch (an <img> cannot send the header). */
export function loadImage(img, url) {
  if (!apiKey()) { img.src = url; return; }
  fetch(url, { headers: headers() })
    .then((r) => (r.ok ? r.blob() : Promise.reject(new Error(String(r.status)))))
    .then((blob) => {
      const objectUrl = URL.createObjectURL(blob);
      blobUrls.add(objectUrl);
      img.src = objectUrl;
    })
    .catch(() => { img.removeAttribute("src"); });
}

/** Release every object URL made for images (they hold the picture in memory until revoked). */
export function releaseImages() {
  for (const url of blobUrls) URL.revokeObjectURL(url);
  blobUrls.clear();
}
