// What the page keeps between visits, in this browser's localStorage: the form's settings and the recent prompts
// (a "Recent prompts" list under the prompt). Also the Copy seed / Copy prompt buttons under the result and the
// prompt written under each History thumbnail.
const SETTINGS_KEY = "imageforge.settings";
const PROMPTS_KEY = "imageforge.prompts";
const MAX_PROMPTS = 30;
// Not the seed (a kept seed would repeat the same image on every visit) nor the mode (it needs an input image).
const FIELDS = ["prompt", "negative", "model", "size", "width", "height", "count", "steps", "guidance", "decoder"];
const $ = (id) => document.getElementById(id);

function read(key, fallback) {
  try {
    return JSON.parse(localStorage.getItem(key)) ?? fallback;
  } catch {
    return fallback;
  }
}

function saveSettings() {
  localStorage.setItem(SETTINGS_KEY, JSON.stringify(Object.fromEntries(FIELDS.map((id) => [id, $(id).value]))));
}

function hasOption(select, value) {
  return [...select.options].some((o) => o.value === value && !o.disabled);
}

// Runs once the page has its models and sizes: a kept model or size the server no longer offers is left out.
function restoreSettings() {
  const kept = read(SETTINGS_KEY, {});
  if (kept.model && hasOption($("model"), kept.model) && $("model").value !== kept.model) {
    $("model").value = kept.model;
    $("model").dispatchEvent(new Event("change"));
  }
  for (const id of FIELDS) {
    if (id === "model" || typeof kept[id] !== "string") continue;
    const field = $(id);
    if (field instanceof HTMLSelectElement && !hasOption(field, kept[id])) continue;
    field.value = kept[id];
  }
  $("size").dispatchEvent(new Event("change"));
}

// --- recent prompts ---

const recent = document.createElement("select");
recent.id = "recent-prompts";
recent.setAttribute("aria-label", "Recent prompts");
document.querySelector("#prompt + .hint").after(recent);

function fillRecent() {
  const prompts = read(PROMPTS_KEY, []);
  recent.replaceChildren(new Option(prompts.length ? "Recent prompts…" : "No recent prompts yet", ""));
  for (const prompt of prompts) recent.add(new Option(prompt.length > 80 ? `${prompt.slice(0, 79)}…` : prompt, prompt));
  recent.disabled = prompts.length === 0;
}

function remember() {
  saveSettings();
  const prompt = $("prompt").value.trim();
  if (!prompt) return;
  const prompts = [prompt, ...read(PROMPTS_KEY, []).filter((p) => p !== prompt)].slice(0, MAX_PROMPTS);
  localStorage.setItem(PROMPTS_KEY, JSON.stringify(prompts));
  fillRecent();
}

recent.addEventListener("change", () => {
  if (!recent.value) return;
  $("prompt").value = recent.value;
  recent.value = "";
  saveSettings();
  $("prompt").focus();
});

// --- copy buttons ---

let shown = { seed: "", prompt: "" };

async function copy(text, button, done) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // No Clipboard API outside a secure context (a LAN address over plain http): the older way still works there.
    const area = document.createElement("textarea");
    area.value = text;
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  const label = button.textContent;
  button.textContent = done;
  setTimeout(() => { button.textContent = label; }, 1500);
}

function copyButton(id, label, done, pick) {
  const button = document.createElement("button");
  button.type = "button";
  button.id = id;
  button.textContent = label;
  button.addEventListener("click", () => copy(pick(), button, done));
  $("use-input").after(button);
  return button;
}

copyButton("copy-prompt", "Copy prompt", "Prompt copied", () => shown.prompt);
copyButton("copy-seed", "Copy seed", "Seed copied", () => shown.seed);

document.addEventListener("imageforge:result", (e) => {
  const { job, image } = e.detail;
  shown = { seed: String(image.seed), prompt: job.result.original_prompt || job.result.prompt };
});

// --- prompts under History thumbnails ---

function caption() {
  for (const button of document.querySelectorAll("#history .history-item")) {
    if (button.querySelector(".history-caption")) continue;
    const text = document.createElement("span");
    text.className = "history-caption";
    text.textContent = button.title;
    // The button is already named by its image ("Restore: …"); the caption is for the eye.
    text.setAttribute("aria-hidden", "true");
    button.append(text);
  }
}

new MutationObserver(caption).observe($("history"), { childList: true, subtree: true });
$("form").addEventListener("input", saveSettings);
$("form").addEventListener("change", (e) => { if (e.target !== recent) saveSettings(); });
$("form").addEventListener("submit", remember);
document.addEventListener("click", (e) => { if (e.target.id === "add-to-queue") remember(); });
fillRecent();
if (document.body.dataset.ready === "true") restoreSettings();
else new MutationObserver((_, observer) => {
  if (document.body.dataset.ready === "true") { observer.disconnect(); restoreSettings(); }
}).observe(document.body, { attributes: true, attributeFilter: ["data-ready"] });
