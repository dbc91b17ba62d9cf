// The review page of `captioner review` (serve/review.py): one photo at a time, doubtful first,
// decided from buttons or the keyboard.  Everything from the results file is put in the page as text
// (textContent, never HTML), so markup in OCR text or file names shows as what it is.
"use strict";

const LIMIT = 125;          // the alt-text guideline the edit field counts against
const PAGE = 100;           // photos asked for at a time
// a photo's status, as a word and a colour (review.css: .status-WORD); the word is always shown,
// so colour is never the only cue
const STATUS = {accept: "accepted", edit: "edited", decorative: "decorative"};

const state = {items: [], total: 0, cur: 0, photos: 0, reviewed: 0, filters: {kind: "", status: "", q: ""},
               busy: false, loading: null};
const $ = (id) => document.getElementById(id);

function say(message) {      // for everyone, and for screen readers (role=status)
  $("status-line").textContent = message;
}

async function api(path, options) {
  const r = await fetch(path, {credentials: "same-origin", ...options});
  const body = await r.json().catch(() => ({}));
  if (!r.ok) {
    const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail || r.statusText);
    throw new Error(`${r.status}: ${detail}`);
  }
  return body;
}

function query(offset) {
  const p = new URLSearchParams({offset: String(offset), limit: String(PAGE)});
  for (const [k, v] of Object.entries(state.filters)) if (v) p.set(k, v);
  return "/api/photos?" + p.toString();
}

function showProgress() {
  $("progress").max = Math.max(state.photos, 1);
  $("progress").value = state.reviewed;
  $("progress-text").textContent =
    `${state.reviewed.toLocaleString("en")} of ${state.photos.toLocaleString("en")} reviewed`;
}

async function loadMore() {
  if (state.loading) return state.loading;
  state.loading = (async () => {
    const page = await api(query(state.items.length));
    state.total = page.total;
    state.photos = page.photos;
    state.reviewed = page.reviewed;
    for (const item of page.items) {
      state.items.push(item);
      $("queue").appendChild(queueEntry(item, state.items.length - 1));
    }
    $("more").hidden = state.items.length >= state.total;
    $("queue-title").textContent = `Photos (${state.total.toLocaleString("en")} listed)`;
    showProgress();
  })();
  try { await state.loading; } finally { state.loading = null; }
}

function statusOf(item) {
  if (item.error) return "failed";
  return (item.decision && STATUS[item.decision.action]) || "pending";
}

function showStatus(el, item) {
  const word = statusOf(item);
  el.textContent = word;
  el.className = `status status-${word}`;
}

function queueEntry(item, i) {
  const li = document.createElement("li");
  const b = document.createElement("button");
  b.type = "button";
  b.dataset.index = String(i);
  b.addEventListener("click", () => go(i));
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = item.name;
  const m = document.createElement("span");
  showStatus(m, item);
  b.append(name, m);
  li.appendChild(b);
  return li;
}

function updateEntry(i) {
  const b = $("queue").querySelector(`button[data-index="${i}"]`);
  if (!b) return;
  showStatus(b.querySelector(".status"), state.items[i]);
  if (i === state.cur) b.setAttribute("aria-current", "true"); else b.removeAttribute("aria-current");
}

function photoUrl(item) {
  return "/api/photo?image=" + encodeURIComponent(item.image);
}

function describeDecision(d) {
  if (!d) return "none yet";
  const when = new Date(d.at * 1000).toLocaleString("en");
  const what = d.action === "edit" ? `edited to “${d.text}”` : d.action === "decorative"
    ? "decorative (empty alt text)" : "accepted";
  return `${what}, by ${d.reviewer}, ${when}`;
}

const USE_FIELDS = [["Page", "page_title"], ["Alt text now", "alt"], ["Proposed here", "proposed"],
                    ["Decided by", "why"], ["Link to", "link"], ["Figure caption", "caption"], ["Text beside it", "nearby"]];

function showUses(item) {   // a proposals record of `captioner fill`: the places documents show this image
  const refs = item.references || [];
  $("uses").hidden = !refs.length;
  const list = $("use-list");
  list.replaceChildren();
  for (const r of refs) {
    const li = document.createElement("li");
    const head = document.createElement("p");
    head.className = "where";
    head.textContent = `${r.document}:${r.where} (${r.status})`;
    const dl = document.createElement("dl");
    for (const [label, key] of USE_FIELDS) {
      let v = r[key];
      if (key === "alt") v = v == null ? "none" : (v === "" ? "(empty: decorative)" : v);
      if (key === "proposed" && v === "") v = "(empty: decorative)";
      if (v == null || v === "") continue;
      const dt = document.createElement("dt");
      dt.textContent = label;
      const dd = document.createElement("dd");
      dd.textContent = v;
      dl.append(dt, dd);
    }
    li.append(head, dl);
    list.appendChild(li);
  }
  const more = (item.reference_count || 0) - refs.length;
  $("uses-title").textContent = `Where documents show it (${(item.reference_count || 0).toLocaleString("en")})` +
    (more > 0 ? `, the first ${refs.length} listed` : "");
}

function render() {
  const item = state.items[state.cur];
  $("empty").hidden = !!item;
  $("card").hidden = !item;
  if (!item) return;
  $("photo-name").textContent = item.name;
  $("position").textContent = `${(state.cur + 1).toLocaleString("en")} of ${state.total.toLocaleString("en")} · ${item.image}`;
  const img = $("photo");
  img.hidden = false;
  $("photo-error").hidden = true;
  img.alt = `The photo under review, ${item.name}`;
  img.src = photoUrl(item);
  $("alt-text").textContent = item.error ? `Failed: ${item.error}` : (item.alt_text || "(empty)");
  $("caption").textContent = item.caption || "—";
  $("kind-shown").textContent = item.kind ? item.kind + (item.chart_type ? ` (${item.chart_type})` : "") : "—";
  $("confidence").textContent = item.confidence == null ? "unknown" : item.confidence.toFixed(2);
  $("tags").textContent = item.tags.length ? item.tags.join(", ") : "—";
  $("flags").textContent = item.flags.length ? item.flags.join(", ") : "none";
  showStatus($("status-shown"), item);
  $("decision").textContent = describeDecision(item.decision);
  showUses(item);
  const read = item.long_description || item.text;
  $("read-box").hidden = !read;
  $("text-read").textContent = read;
  for (const id of ["accept", "edit", "decorative"]) $(id).disabled = !!item.error;
  closeEditor(false);
  for (const b of $("queue").querySelectorAll("button[aria-current]")) b.removeAttribute("aria-current");
  updateEntry(state.cur);
  history.replaceState(null, "", "#" + encodeURIComponent(item.image));
  for (const next of state.items.slice(state.cur + 1, state.cur + 3)) new Image().src = photoUrl(next);  // preload
}

async function go(i) {
  if (i >= state.items.length && state.items.length < state.total) await loadMore();
  state.cur = Math.max(0, Math.min(i, state.items.length - 1));
  render();
  if (state.items.length - state.cur < 10 && state.items.length < state.total) loadMore();
}

async function decide(action, text) {
  const item = state.items[state.cur];
  if (!item || state.busy) return;
  if (item.error && action !== "skip") { say(`${item.name} failed to caption: only skip applies.`); return; }
  state.busy = true;
  try {
    const r = await api("/api/decisions", {method: "POST", headers: {"Content-Type": "application/json"},
                                           body: JSON.stringify({image: item.image, action, text})});
    if (action !== "skip") item.decision = r.decision;
    state.photos = r.photos;
    state.reviewed = r.reviewed;
    showProgress();
    updateEntry(state.cur);
    say(`${action === "skip" ? "Skipped" : "Saved: " + STATUS[action]} ${item.name}. ` +
        `${state.reviewed.toLocaleString("en")} of ${state.photos.toLocaleString("en")} reviewed.`);
    await go(state.cur + 1);
  } catch (e) {
    say(`Not saved: ${e.message}`);
  } finally {
    state.busy = false;
  }
}

function countChars() {
  const n = [...$("edit-text").value.trim()].length;
  $("edit-count").textContent = n > LIMIT ? `${n} / ${LIMIT} characters: ${n - LIMIT} over the guideline`
    : `${n} / ${LIMIT} characters`;
  $("edit-count").classList.toggle("over", n > LIMIT);
}

function openEditor() {
  const item = state.items[state.cur];
  if (!item || item.error) return;
  $("editor").hidden = false;
  const d = item.decision;
  $("edit-text").value = d && d.action === "edit" ? d.text : (item.alt_text || "");
  countChars();
  $("edit-text").focus();
  $("edit-text").select();
}

function closeEditor(focus = true) {
  $("editor").hidden = true;
  if (focus) $("actions").focus();
}

function saveEdit() {
  const text = $("edit-text").value.trim();
  if (!text) { say("An edit needs a text; for an empty alt text choose Decorative."); return; }
  closeEditor();
  decide("edit", text);
}

async function applyFilters() {
  state.filters = {kind: $("kind").value, status: $("status").value, q: $("query").value.trim()};
  state.items = [];
  state.cur = 0;
  $("queue").replaceChildren();
  try {
    await loadMore();
    render();
    say(`${state.total.toLocaleString("en")} photos listed.`);
  } catch (e) {
    say(`Could not load the photos: ${e.message}`);
  }
}

const KEYS = {a: () => decide("accept"), e: openEditor, d: () => decide("decorative"), s: () => decide("skip"),
              j: () => go(state.cur + 1), ArrowRight: () => go(state.cur + 1),
              k: () => go(state.cur - 1), ArrowLeft: () => go(state.cur - 1),
              "/": () => $("query").focus()};

function onKey(ev) {
  if (ev.ctrlKey || ev.altKey || ev.metaKey) return;
  const t = ev.target;
  if (t instanceof HTMLInputElement || t instanceof HTMLTextAreaElement || t instanceof HTMLSelectElement) return;
  const act = KEYS[ev.key.length === 1 ? ev.key.toLowerCase() : ev.key];
  if (!act || $("card").hidden) return;
  ev.preventDefault();
  act();
}

async function start() {
  $("photo").addEventListener("error", () => {
    const item = state.items[state.cur];
    $("photo").hidden = true;
    $("photo-error").hidden = false;
    $("photo-error").textContent = item ? `No preview of ${item.name}: the file cannot be shown.` : "";
  });
  for (const [id, fn] of [["accept", () => decide("accept")], ["edit", openEditor],
                          ["decorative", () => decide("decorative")], ["skip", () => decide("skip")],
                          ["prev", () => go(state.cur - 1)], ["next", () => go(state.cur + 1)],
                          ["save", saveEdit], ["cancel", () => closeEditor()], ["more", () => loadMore()]]) {
    $(id).addEventListener("click", fn);
  }
  $("edit-text").addEventListener("input", countChars);
  $("edit-text").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); saveEdit(); }
    else if (ev.key === "Escape") { ev.preventDefault(); closeEditor(); }
  });
  $("filters").addEventListener("submit", (ev) => { ev.preventDefault(); applyFilters(); });
  document.addEventListener("keydown", onKey);
  try {
    const s = await api("/api/summary");
    $("results-name").textContent = "· " + s.results + " · reviewing as " + s.reviewer;
    for (const k of s.kinds) {
      const o = document.createElement("option");
      o.value = o.textContent = k;
      $("kind").appendChild(o);
    }
    await loadMore();
    const wanted = decodeURIComponent(location.hash.slice(1));
    const at = wanted ? state.items.findIndex((it) => it.image === wanted) : -1;
    await go(at < 0 ? 0 : at);
    $("actions").focus();
  } catch (e) {
    say(`Could not load the review: ${e.message}`);
  }
}

document.addEventListener("DOMContentLoaded", start);
