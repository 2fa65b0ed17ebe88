// The imageforge web UI: a client of the public HTTP API (/models, /templates, /policy, /jobs, /images), nothing more.
// With API keys on, the key the user enters is kept in localStorage and sent as a Bearer header on every fetch;
// the image links in job results are signed by the server, so <img src> and Download need no header.

const $ = (id) => document.getElementById(id);
const PRESETS = [[512, 512], [768, 768], [1024, 1024], [768, 512], [512, 768], [1024, 768], [768, 1024]];
// inputs: the input image each job of this visit was sent, by job id (the API does not hand inputs back).
const state = { status: null, fields: {}, templates: [], style: null, models: [], maxRes: 1024, job: null, events: null, lastSeed: null, lastImage: null, inputImage: null, inputs: new Map() };
const KEY_STORE = "imageforge.apiKey";
const TERMINAL = ["succeeded", "failed", "cancelled"];
// The job this tab follows, kept per tab across a reload.
const JOB_STORE = "imageforge.job";
// How often a queued job's place in line is read again: the event stream reports state changes, not places.
const POSITION_POLL_MS = 2000;

// Every API error body is {"ok": false, "error": {code, message, hint}}; anything else becomes one of those.
class ApiError extends Error {
  constructor(error) {
    super(error.message);
    this.code = error.code;
    this.hint = error.hint;
  }
}

function withKey(headers = {}) {
  const key = localStorage.getItem(KEY_STORE);
  return key ? { ...headers, Authorization: `Bearer ${key}` } : headers;
}

// A fetch that cannot reach the server at all rejects with the browser's own words ("Failed to fetch").
const UNREACHABLE = {
  code: "server_unreachable",
  message: "The server does not answer: check that `imageforge serve` is still running, then try again.",
  hint: "",
};

// Input the page refuses before sending: said beside the field it concerns, which gets the focus.
class FieldError extends Error {
  constructor(field, message) {
    super(message);
    this.field = field;
  }
}

export async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, { ...options, headers: withKey(options.headers) });
  } catch {
    throw new ApiError(UNREACHABLE);
  }
  if (response.status === 204) return null; // a delete: nothing to say
  let body = null;
  try {
    body = await response.json();
  } catch {
    throw new ApiError({ code: "bad_response", message: `${path} answered ${response.status}`, hint: "" });
  }
  if (!response.ok || body.ok === false) {
    const error = new ApiError(body.error || { code: String(response.status), message: JSON.stringify(body), hint: "" });
    if (response.status === 401) askForKey(error);
    throw error;
  }
  return body;
}

// --- API key login ---

function askForKey(error) {
  // A stored key the server refuses is wrong or was removed: forget it, so a reload asks again.
  localStorage.removeItem(KEY_STORE);
  $("forget-key").hidden = true;
  $("login-error").textContent = $("api-key").value ? error.message : "";
  $("login").hidden = false;
  $("api-key").focus();
}

async function logIn() {
  const key = $("api-key").value.trim();
  if (!key) return;
  localStorage.setItem(KEY_STORE, key);
  $("login").hidden = true;
  $("forget-key").hidden = false;
  await load();
}

function forgetKey() {
  localStorage.removeItem(KEY_STORE);
  location.reload();
}

// What to do about the errors a person can run into from this page, in one sentence each; the server's own
// message and hint stay readable under "Details".
const ADVICE = {
  weights_unavailable: "This model's weights are not on this machine: choose another model, or pull its weights first (see Details).",
  model_guarded: "This model is switched off on this server: choose another model (Details says how to switch it on).",
  model_busy: "This model is busy being loaded or removed: try again in a moment.",
  out_of_memory: "The server ran out of memory: try a smaller size, fewer images or a lighter model.",
  insufficient_memory: "This size does not fit the server's free memory: choose the size Details names, or a lighter model.",
  generation_failed: "The generation failed on the server: try again, or another model or size (see Details).",
  invalid_image: "The input image could not be read: choose a PNG, JPEG or WebP file.",
  payload_too_large: "The input image is too large to send: choose a smaller file.",
  queue_full: "The server's queue is full: try again in a minute.",
  rate_limited: "Too many requests at once: wait a moment, then try again.",
  storage_full: "The server's disk is full: free some space on it, then try again.",
  queue_unavailable: "The server cannot reach its job queue right now: try again in a moment.",
};

export function showError(error) {
  const box = $("error");
  box.replaceChildren();
  const message = document.createElement("strong");
  message.textContent = ADVICE[error.code] || error.message;
  box.append(message);
  const hint = document.createElement("p");
  hint.className = "hint";
  hint.textContent = error.hint || "";
  if (ADVICE[error.code]) {
    const details = document.createElement("details");
    const summary = document.createElement("summary");
    summary.textContent = "Details";
    const said = document.createElement("p");
    said.textContent = error.message;
    details.append(summary, said, hint);
    box.append(details);
  } else if (error.hint) {
    box.append(hint);
  }
  box.hidden = false;
  bringIntoView(box);
}

export function clearError() {
  $("error").hidden = true;
}

function showFieldError(error) {
  const field = error.field;
  const id = `${field.id}-error`;
  let note = document.getElementById(id);
  if (!note) {
    note = document.createElement("p");
    note.id = id;
    note.className = "field-error";
    note.setAttribute("role", "alert");
    // After the row a field shares with its buttons, not inside it.
    (field.closest(".row") || field).insertAdjacentElement("afterend", note);
    field.setAttribute("aria-describedby", `${field.getAttribute("aria-describedby") || ""} ${id}`.trim());
  }
  note.textContent = error.message;
  note.hidden = false;
  field.setAttribute("aria-invalid", "true");
  field.focus();
}

function clearFieldErrors() {
  for (const note of document.querySelectorAll(".field-error")) note.hidden = true;
  for (const field of document.querySelectorAll("[aria-invalid]")) field.removeAttribute("aria-invalid");
}

function selectedModel() {
  return state.models.find((m) => m.key === $("model").value);
}

// Sizes offered: the model's own default, then presets that fit MAX_RES and the model's size multiple.
function fillSizes(keep) {
  const model = selectedModel();
  const select = $("size");
  const previous = keep || select.value;
  select.replaceChildren();
  const sizes = [];
  if (model) sizes.push([model.defaults.width, model.defaults.height]);
  const multiple = model ? model.size_multiple : 8;
  for (const [w, h] of PRESETS) {
    if (w <= state.maxRes && h <= state.maxRes && w % multiple === 0 && h % multiple === 0) sizes.push([w, h]);
  }
  const seen = new Set();
  const editing = currentTask() !== "text2img";
  if (editing) {
    // An edit is as large as its input unless a size is chosen: offer that first, with the size it comes out.
    const out = inputOutputSize();
    select.add(new Option(out ? `${out[0]}×${out[1]} (the input's size)` : "The input's size", "input"));
  }
  for (const [w, h] of sizes) {
    const value = `${w}x${h}`;
    if (seen.has(value)) continue;
    seen.add(value);
    select.add(new Option(model && !editing && seen.size === 1 ? `${value} (model default)` : value, value));
  }
  select.add(new Option("Custom…", "custom"));
  if (previous && previous !== "custom" && [...select.options].some((o) => o.value === previous)) select.value = previous;
  else if (previous === "custom") select.value = "custom";
  $("custom-size").hidden = select.value !== "custom";
  $("width").max = $("height").max = state.maxRes;
}

// The size the server makes an edit of the input image when none is asked for: the input's, scaled down to fit
// MAX_RES and rounded down to the model's multiple (as the server's validation does it).
function inputOutputSize() {
  const image = $("input-image");
  if (!state.inputImage || !image.naturalWidth) return null;
  const model = selectedModel();
  const multiple = model ? model.size_multiple : 8;
  const smallest = declared("width").minimum || multiple;
  const largest = Math.floor(state.maxRes / multiple) * multiple;
  const scale = Math.min(1, state.maxRes / Math.max(image.naturalWidth, image.naturalHeight));
  return [image.naturalWidth, image.naturalHeight].map((side) =>
    Math.min(largest, Math.max(smallest, Math.floor(Math.floor(side * scale) / multiple) * multiple)));
}

function setSize(width, height) {
  const value = `${width}x${height}`;
  if (![...$("size").options].some((o) => o.value === value)) {
    $("size").add(new Option(value, value), $("size").options.length - 1);
  }
  $("size").value = value;
  $("custom-size").hidden = true;
}

function describeModel() {
  const model = selectedModel();
  if (!model) return;
  const d = model.defaults;
  const steps = `${d.steps} ${d.steps === 1 ? "step" : "steps"}`;
  const notes = [
    `${model.description} Tasks: ${model.tasks.join(", ")}. Default ${d.width}×${d.height}, ${steps}, guidance ${d.guidance}.`,
  ];
  if (model.notice) notes.push(model.notice);
  if (!model.weights_present) {
    notes.push(`Its weights are not on this machine yet: \`imageforge models pull ${model.key}\` on the server fetches them.`);
  }
  $("model-info").textContent = notes.join(" ");
  $("steps").placeholder = d.steps;
  $("guidance").placeholder = d.guidance;
  for (const radio of document.querySelectorAll("input[name=task]")) {
    radio.disabled = !model.tasks.includes(radio.value);
  }
  if (document.querySelector("input[name=task]:checked").disabled) {
    document.querySelector("input[name=task][value=text2img]").checked = true;
    onTaskChange();
  }
  fillSizes();
}

async function loadModels() {
  const body = await api("/models");
  state.models = body.models;
  state.maxRes = body.max_res || 1024;
  const select = $("model");
  select.replaceChildren();
  const off = [];
  for (const model of body.models) {
    let label = `${model.key} — ${model.tasks.join(", ")}`;
    if (!model.available) label = `${model.key} — off on this server`;
    else if (!model.weights_present) label += " (not downloaded)";
    const option = new Option(label, model.key);
    option.disabled = !model.available;
    select.add(option);
    // A disabled option cannot show why it is off: the reason, and the setting that turns it on, go below.
    if (!model.available && model.guard) off.push(`${model.key}: ${model.guard.reason} Set ${model.guard.setting}=1 on the server to use it.`);
  }
  const summary = document.createElement("summary");
  summary.textContent = `${off.length} ${off.length === 1 ? "model is" : "models are"} off on this server: why`;
  const reasons = document.createElement("p");
  reasons.textContent = off.join(" ");
  $("model-off").replaceChildren(summary, reasons);
  $("model-off").hidden = !off.length;
  select.value = body.default;
  describeModel();
}

// The request fields and their bounds, as the server declares them (the one declaration behind its OpenAPI
// schema): the page checks input against these, never against numbers of its own.
async function loadFields() {
  const body = await api("/openapi.json");
  state.fields = body.components.schemas.JobBody.properties;
  state.loraWeight = body.components.schemas.LoraWeight.properties.weight;
  const seed = declared("seed");
  $("seed-help").textContent = `A whole number from ${seed.minimum} to ${seed.maximum}; empty means a new random seed each time.`;
  for (const [id, name] of [["steps", "steps"], ["guidance", "guidance"], ["count", "n"], ["width", "width"], ["height", "height"]]) {
    const bounds = declared(name);
    if (bounds.minimum !== undefined) $(id).min = bounds.minimum;
    if (bounds.maximum !== undefined) $(id).max = bounds.maximum;
  }
  const strength = declared("strength");
  const step = Number($("strength").step);
  $("strength").min = strength.exclusiveMinimum !== undefined ? strength.exclusiveMinimum + step : strength.minimum;
  $("strength").max = strength.maximum;
  // The choices of the enum fields, from their declared schemas.
  for (const [id, schema] of [["sampler", "Sampler"], ["schedule", "Schedule"]]) {
    for (const value of body.components.schemas[schema]?.enum || []) {
      if (![...$(id).options].some((o) => o.value === value)) $(id).append(new Option(value, value));
    }
  }
}

// The LoRAs of the server's LoRA folder, each a checkbox and a weight: the checked ones go with the request.
async function loadLoras() {
  const { loras } = await api("/loras");
  const weight = state.loraWeight;
  $("loras-none").hidden = loras.length > 0;
  for (const row of document.querySelectorAll("#loras .lora")) row.remove();
  for (const [index, lora] of loras.entries()) {
    const row = document.createElement("div");
    row.className = "lora";
    row.dataset.name = lora.name;
    const box = document.createElement("input");
    box.type = "checkbox";
    box.id = `lora-${index}`;  // a file name may hold spaces, which an id may not
    const label = document.createElement("label");
    label.htmlFor = box.id;
    label.textContent = `${lora.name} (${lora.size_mb} MB)`;
    const number = document.createElement("input");
    Object.assign(number, { type: "number", value: "1", step: "0.05", min: weight.minimum, max: weight.maximum });
    number.setAttribute("aria-label", `Weight of ${lora.name}`);
    row.append(box, label, number);
    $("loras").append(row);
  }
}

// The checked LoRAs as the request names them, checked against the declared limits.
function chosenLoras() {
  const rows = [...document.querySelectorAll("#loras .lora")].filter((row) => row.querySelector("[type=checkbox]").checked);
  const most = declared("loras").maxItems;
  if (most !== undefined && rows.length > most) {
    throw new FieldError(rows[most].querySelector("[type=checkbox]"), `Choose at most ${most} LoRAs for one image.`);
  }
  const { minimum, maximum } = state.loraWeight;
  return rows.map((row) => {
    const field = row.querySelector("[type=number]");
    const weight = Number(field.value);
    if (field.value.trim() === "" || !Number.isFinite(weight) || weight < minimum || weight > maximum) {
      throw new FieldError(field, `The weight of ${row.dataset.name} must be a number from ${minimum} to ${maximum}.`);
    }
    return { name: row.dataset.name, weight };
  });
}

// Check the LoRAs an earlier result applied, at its weights; the others are unchecked.
function restoreLoras(applied) {
  const weights = new Map((applied || []).map((lora) => [lora.name, lora.weight]));
  for (const row of document.querySelectorAll("#loras .lora")) {
    row.querySelector("[type=checkbox]").checked = weights.has(row.dataset.name);
    if (weights.has(row.dataset.name)) row.querySelector("[type=number]").value = weights.get(row.dataset.name);
  }
}

// One field's type and bounds: {type, minimum, maximum, exclusiveMinimum, maxLength}, whichever it declares.
function declared(name) {
  const field = state.fields[name] || {};
  const kinds = field.anyOf || [field];
  return { ...field, ...(kinds.find((kind) => kind.type && kind.type !== "null") || {}) };
}

// The value of a number field, refused beside the field when the server would refuse it.
function checkedNumber(id, name, label) {
  const raw = $(id).value.trim();
  if (!raw) return undefined;
  const bounds = declared(name);
  const value = Number(raw);
  const whole = bounds.type === "integer";
  const ok = Number.isFinite(value) && (!whole || Number.isInteger(value)) &&
    (bounds.minimum === undefined || value >= bounds.minimum) &&
    (bounds.exclusiveMinimum === undefined || value > bounds.exclusiveMinimum) &&
    (bounds.maximum === undefined || value <= bounds.maximum);
  if (!ok) {
    const low = bounds.exclusiveMinimum !== undefined ? `above ${bounds.exclusiveMinimum}` : `at least ${bounds.minimum}`;
    const high = bounds.maximum !== undefined ? ` and at most ${bounds.maximum}` : "";
    throw new FieldError($(id), `${label} must be ${whole ? "a whole number" : "a number"} ${low}${high}.`);
  }
  return value;
}

async function loadTemplates() {
  const body = await api("/templates");
  state.templates = body.templates;
  $("template").length = 1; // keep "(none)"
  for (const t of body.templates) $("template").add(new Option(`${t.title} (${t.width}×${t.height})`, t.key));
}

async function loadPolicy() {
  const body = await api("/policy");
  // What is excluded and what is added are told apart: the added directives are no exclusions.
  $("policy-excluded").textContent = body.negative_prompt || "nothing";
  const added = [];
  if (body.directive) added.push(`to a prompt that asks for text: “${body.directive}”`);
  if (body.no_text_directive) added.push(`to any other prompt: “${body.no_text_directive}”`);
  if (body.profile !== "none") added.push(`profile ${body.profile}`);
  $("policy-added").textContent = added.join("; ") || "nothing";
}

// A style fills the prompt for editing (never applied behind the user's back) and sets its size. The style in
// the prompt is its body's text around {subject}: choosing another style swaps that text around the same subject
// instead of wrapping the old style, and editing the text away drops the style and the negative prompt it brought.
function applyTemplate() {
  const previous = state.style;
  const subject = subjectOf($("prompt").value).trim();
  const t = state.templates.find((one) => one.key === $("template").value);
  if (previous && $("negative").value === previous.negative) $("negative").value = "";
  state.style = null;
  if (!t) {
    if (previous) $("prompt").value = subject;
    return;
  }
  const [prefix, suffix = ""] = t.body.split("{subject}");
  state.style = { prefix, suffix, negative: t.negative_prompt || "" };
  $("prompt").value = prefix + subject + suffix;
  if (t.negative_prompt && !$("negative").value.trim()) $("negative").value = t.negative_prompt;
  setSize(t.width, t.height);
  if (!subject) {
    // No subject yet: the caret waits where it goes.
    $("prompt").focus();
    $("prompt").setSelectionRange(prefix.length, prefix.length);
  }
}

// The user's own words in the prompt: without the chosen style's text around them.
function subjectOf(prompt) {
  const style = state.style;
  if (!style || !isStyled(prompt)) return prompt;
  return prompt.slice(style.prefix.length, prompt.length - style.suffix.length);
}

function isStyled(prompt) {
  const style = state.style;
  return Boolean(style) && prompt.length >= style.prefix.length + style.suffix.length &&
    prompt.startsWith(style.prefix) && prompt.endsWith(style.suffix);
}

function onPromptEdit() {
  if (!state.style || isStyled($("prompt").value)) return;
  if ($("negative").value === state.style.negative) $("negative").value = "";
  state.style = null;
  $("template").value = "";
}

function currentTask() {
  return document.querySelector("input[name=task]:checked").value;
}

export function requestBody() {
  const task = currentTask();
  if (!$("prompt").value.trim()) throw new FieldError($("prompt"), "Write a prompt first: describe what to draw.");
  if (state.style && !subjectOf($("prompt").value).trim()) {
    throw new FieldError($("prompt"), "Write what to draw where the cursor is: the style needs a subject.");
  }
  const maxLength = declared("prompt").maxLength;
  if (maxLength && $("prompt").value.length > maxLength) {
    throw new FieldError($("prompt"), `Shorten the prompt to at most ${maxLength} characters.`);
  }
  const body = { task, prompt: $("prompt").value, model: $("model").value };
  const negative = $("negative").value.trim();
  if (negative) body.negative_prompt = negative;
  if ($("size").value === "custom") {
    body.width = checkedSize("width", "Width");
    body.height = checkedSize("height", "Height");
  } else if ($("size").value !== "input") {
    const [w, h] = $("size").value.split("x").map(Number);
    body.width = w;
    body.height = h;
  }
  const seed = $("seed").value.trim();
  if (seed) {
    const bounds = declared("seed");
    if (!/^\d+$/.test(seed) || Number(seed) > bounds.maximum) {
      throw new FieldError($("seed"), `Seed must be a whole number from ${bounds.minimum} to ${bounds.maximum}, or empty for a random one.`);
    }
    body.seed = Number(seed);
  }
  const steps = checkedNumber("steps", "steps", "Steps");
  if (steps !== undefined) body.steps = steps;
  const guidance = checkedNumber("guidance", "guidance", "Guidance");
  if (guidance !== undefined) body.guidance = guidance;
  if ($("decoder").value !== "full") body.decoder = $("decoder").value;
  if ($("sampler").value) body.sampler = $("sampler").value;
  if ($("schedule").value !== "default") body.schedule = $("schedule").value;
  const loras = chosenLoras();
  if (loras.length) body.loras = loras;
  const count = checkedNumber("count", "n", "Images") ?? 1;
  if (count > 1) body.n = count;
  if (task !== "text2img") {
    if (!state.inputImage) throw new FieldError($("upload"), "Choose an input image first, or use a result as input.");
    body.init_image = state.inputImage;
    body.strength = checkedNumber("strength", "strength", "Strength");
  }
  if (task === "inpaint") {
    if (!maskPainted()) throw new FieldError($("mask"), "Paint the area to repaint on the image first.");
    body.mask_image = maskDataUrl();
  }
  return body;
}

// A custom width or height: within the declared minimum and the server's MAX_RES, a multiple of the model's step.
function checkedSize(id, label) {
  const model = selectedModel();
  const multiple = model ? model.size_multiple : 8;
  const low = declared(id).minimum;
  const value = Number($(id).value);
  if (!Number.isInteger(value) || value < low || value > state.maxRes || value % multiple !== 0) {
    throw new FieldError($(id), `${label} must be a multiple of ${multiple} from ${low} to ${state.maxRes}.`);
  }
  return value;
}

function maskPainted() {
  const canvas = $("mask");
  if (!canvas.width || !canvas.height) return false;
  const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  for (let i = 3; i < pixels.length; i += 4) if (pixels[i]) return true;
  return false;
}

function setRunning(running) {
  const focused = document.activeElement;
  $("generate").disabled = running;
  $("progress-box").hidden = !running && !state.job;
  $("cancel").hidden = !running;
  // A disabled or hidden button drops the keyboard focus to the page: hand it to the button that takes over.
  if (running && focused === $("generate")) $("cancel").focus({ preventScroll: true });
  if (!running && (focused === $("cancel") || focused === document.body)) $("generate").focus({ preventScroll: true });
}

async function submit() {
  if (state.job) return;
  clearError();
  clearFieldErrors();
  let body;
  try {
    body = requestBody();
  } catch (error) {
    if (error instanceof FieldError) showFieldError(error);
    else showError(error);
    return;
  }
  setRunning(true);
  bringIntoView($("progress-box"));
  $("progress").value = 0;
  $("progress").removeAttribute("max");
  $("progress-text").textContent = "submitting…";
  try {
    const job = await api("/jobs", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    state.job = job.job_id;
    document.dispatchEvent(new CustomEvent("imageforge:job", { detail: { job } }));
    if (body.init_image) state.inputs.set(job.job_id, body.init_image);
    sessionStorage.setItem(JOB_STORE, job.job_id);
    $("progress-text").textContent = queuedText(job.queue_position);
    follow(job.job_id, job.status);
  } catch (error) {
    state.job = null;
    setRunning(false);
    $("progress-box").hidden = true;
    showGenerationError(error);
  }
}

// A generation that failed shows why, and no longer the previous result, which would read as its outcome.
function showGenerationError(error) {
  $("result").hidden = true;
  showError(error);
}

// Follows the job's SSE stream, read with fetch (EventSource cannot send the API key); whatever ends it (the
// terminal state, a dropped stream, a cancel) ends in finish().
function queuedText(position) {
  return position ? `queued (position ${position})` : "queued";
}

// While the followed job waits in line, show its place as it moves up.
async function showPlaceInLine(jobId) {
  while (state.job === jobId && state.status === "queued") {
    await new Promise((resolve) => setTimeout(resolve, POSITION_POLL_MS));
    try {
      const job = await api(`/jobs/${encodeURIComponent(jobId)}`);
      if (state.job === jobId && state.status === "queued" && job.status === "queued") {
        $("progress-text").textContent = queuedText(job.queue_position);
      }
    } catch {
      return; // the stream's end reports what happened
    }
  }
}

// After a reload, follow again the job this tab had running or queued (another tab's jobs stay with it).
async function resumeJob() {
  const own = sessionStorage.getItem(JOB_STORE);
  if (state.job || !own) return;
  let jobs;
  try {
    jobs = (await api("/jobs?status=running&status=queued")).jobs;
  } catch {
    return;
  }
  const job = jobs.find((one) => one.job_id === own);
  if (!job) sessionStorage.removeItem(JOB_STORE);
  if (!job || state.job) return;
  state.job = job.job_id;
  sessionStorage.setItem(JOB_STORE, job.job_id);
  setRunning(true);
  $("progress").removeAttribute("max");
  $("progress-text").textContent = job.status === "queued" ? queuedText(job.queue_position) : "running";
  follow(job.job_id, job.status);
}

async function follow(jobId, status = "queued") {
  const controller = new AbortController();
  state.events = controller;
  state.status = status;
  if (status === "queued") showPlaceInLine(jobId);
  const progress = (data) => {
    if (!data.total) return;
    $("progress").max = data.total;
    $("progress").value = data.step;
    $("progress-text").textContent = `step ${data.step} of ${data.total}`;
  };
  const handlers = {
    progress,
    preview: (data) => {
      $("preview").src = data.image;
      $("preview").hidden = false;
      progress(data);
    },
    state: (data) => {
      state.status = data.status;
      if (data.status === "running") $("progress-text").textContent = data.total ? `step ${data.step} of ${data.total}` : "running (loading the model…)";
    },
  };
  try {
    const response = await fetch(`/jobs/${encodeURIComponent(jobId)}/events?preview=1`, { headers: withKey(), signal: controller.signal });
    if (response.ok) {
      for await (const event of serverSentEvents(response.body)) {
        handlers[event.type]?.(event.data);
        if (event.type === "state" && TERMINAL.includes(event.data.status)) break;
      }
    }
  } catch {
    // Dropped or aborted: the job itself says how it ended.
  }
  finish(jobId);
}

// Parses a text/event-stream into {type, data} events; comments (the server's keep-alives) are skipped.
async function* serverSentEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let type = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) type = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
      }
      if (data.length) yield { type, data: JSON.parse(data.join("\n")) };
    }
  }
}

async function finish(jobId) {
  if (state.events) state.events.abort();
  state.events = null;
  if (state.job !== jobId) return;
  if (sessionStorage.getItem(JOB_STORE) === jobId) sessionStorage.removeItem(JOB_STORE);
  try {
    const job = await api(`/jobs/${encodeURIComponent(jobId)}`);
    if (job.status === "succeeded") {
      showResult(job);
      loadHistory();
    } else if (job.error) {
      showGenerationError(job.error);
    } else if (!TERMINAL.includes(job.status)) {
      showGenerationError({ message: `The job is ${job.status} but its event stream ended.`, hint: "Reload the page to follow it." });
    }
  } catch (error) {
    showGenerationError(error);
  } finally {
    state.job = null;
    $("preview").hidden = true;
    setRunning(false);
    $("progress-box").hidden = true;
  }
}

export function showResult(job, index = 0) {
  const r = job.result;
  // A result of several images lists them all; one from an older server has only its own fields.
  const images = r.images && r.images.length ? r.images : [{ seed: r.seed, url: job.links.image, elapsed_s: r.elapsed_s, cached: r.cached }];
  const image = images[index];
  state.lastImage = image.url;
  state.lastSeed = image.seed;
  $("seed-last").disabled = false;
  $("result-image").src = image.url;
  $("result-image").alt = `Generated: ${r.prompt}`;
  $("download").href = image.url;
  // A cached image took no time to make now: say where it came from instead of "0.00 s".
  const took = image.cached ? "from the cache (made earlier with these settings)" : `${image.elapsed_s.toFixed(2)} s`;
  $("result-meta").textContent = `seed ${image.seed} · ${r.model} · ${r.width}×${r.height} · ${took}`;
  const strip = $("result-images");
  strip.replaceChildren(...images.map((one, i) => {
    const thumb = document.createElement("img");
    thumb.src = one.url;
    thumb.alt = `Image ${i + 1}, seed ${one.seed}`;
    thumb.setAttribute("aria-current", String(i === index));
    thumb.addEventListener("click", () => showResult(job, i));
    return thumb;
  }));
  strip.hidden = images.length < 2;
  $("result").hidden = false;
  // For the feature modules (zoom, comparison, copy buttons): which image is shown, and of which job.
  document.dispatchEvent(new CustomEvent("imageforge:result", { detail: { job, image } }));
  bringIntoView($("result"));
}

// On a phone the result panel sits below the form: scroll what just changed there into view.
function bringIntoView(element) {
  const box = element.getBoundingClientRect();
  if (box.top < 0 || box.bottom > window.innerHeight) element.scrollIntoView({ block: "start" });
}

async function cancel() {
  if (!state.job) return;
  try {
    await api(`/jobs/${encodeURIComponent(state.job)}`, { method: "DELETE" });
    $("progress-text").textContent = "cancelling…";
  } catch (error) {
    // job_finished: it ended before the cancel arrived; the stream reports how.
    if (error.code !== "job_finished") showError(error);
  }
}

export async function loadHistory() {
  try {
    const body = await api("/jobs?status=succeeded");
    const list = $("history");
    list.replaceChildren();
    // A cached repeat is a new job with the same image file: the image is listed once, at its newest job.
    const shown = new Set();
    for (const job of body.jobs.slice(0, 20)) {
      if (!job.result || !job.links.image) continue;
      const file = new URL(job.links.image, location.href).pathname;
      if (shown.has(file)) continue;
      shown.add(file);
      const item = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.className = "history-item";
      button.title = job.result.original_prompt || job.result.prompt;
      const img = document.createElement("img");
      img.src = job.links.image;
      img.alt = `Restore: ${button.title}`;
      button.append(img);
      button.addEventListener("click", () => restore(job));
      item.append(button);
      list.append(item);
    }
  } catch {
    // The history is a convenience; the page works without it.
  }
}

export function restore(job) {
  const r = job.result;
  state.style = null;
  $("template").value = "";
  $("prompt").value = r.original_prompt || r.prompt;
  $("negative").value = r.negative_prompt || "";
  if ([...$("model").options].some((o) => o.value === r.model)) {
    $("model").value = r.model;
    describeModel();
  }
  setSize(r.width, r.height);
  $("seed").value = r.seed;
  $("steps").value = r.steps;
  $("guidance").value = r.guidance;
  // The result names the sampler that ran, the model's own included: choosing it again draws the same image.
  for (const name of ["sampler", "schedule"]) {
    if ([...$(name).options].some((o) => o.value === r[name])) $(name).value = r[name];
  }
  restoreLoras(r.loras);
  const task = job.task || r.task || "text2img";
  const radio = document.querySelector(`input[name=task][value=${task}]`);
  if (radio && !radio.disabled) {
    radio.checked = true;
    onTaskChange();
  }
  if (task !== "text2img") {
    if (r.strength !== null && r.strength !== undefined) {
      $("strength").value = r.strength;
      $("strength-value").textContent = $("strength").value;
    }
    restoreInputs(job);
  }
  showResult(job);
}

// The job's input image (and mask) from this visit, else from the server, which keeps them with the job.
async function restoreInputs(job) {
  const load = async (url) => {
    const response = await fetch(url, { headers: withKey() });
    if (!response.ok) throw new Error(`${url} answered ${response.status}`);
    return blobToDataUrl(await response.blob());
  };
  try {
    const input = state.inputs.get(job.job_id) || (job.links.init_image && await load(job.links.init_image));
    if (!input) throw new Error("no input image");
    await setInput(input);
    if (job.links.mask_image) drawMask(await load(job.links.mask_image));
  } catch {
    showFieldError(new FieldError($("upload"), "Choose this job's input image again: the server no longer has it."));
  }
}

// A stored mask (white = repaint, black = keep) painted back onto the canvas as strokes: white where it repaints.
async function drawMask(dataUrl) {
  const image = new Image();
  image.src = dataUrl;
  await image.decode();
  const canvas = $("mask");
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.drawImage(image, 0, 0, canvas.width, canvas.height);
  const pixels = ctx.getImageData(0, 0, canvas.width, canvas.height);
  for (let i = 0; i < pixels.data.length; i += 4) {
    pixels.data[i + 3] = pixels.data[i];
    pixels.data[i] = pixels.data[i + 1] = pixels.data[i + 2] = 255;
  }
  ctx.putImageData(pixels, 0, 0);
}

// --- input image and mask ---

// Resolves once the image is shown and the mask canvas has its size.
export function setInput(dataUrl) {
  state.inputImage = dataUrl;
  const shown = new Promise((resolve) => {
    // The mask canvas takes the image's own pixel size: the server wants a mask exactly as large as the input.
    $("input-image").onload = () => {
      const canvas = $("mask");
      canvas.width = $("input-image").naturalWidth;
      canvas.height = $("input-image").naturalHeight;
      fillSizes();
      resolve();
    };
  });
  $("input-image").src = dataUrl;
  $("input-box").hidden = false;
  document.dispatchEvent(new CustomEvent("imageforge:input", { detail: { dataUrl } }));
  return shown;
}

async function useResultAsInput() {
  if (!state.lastImage) return;
  const blob = await (await fetch(state.lastImage, { headers: withKey() })).blob();
  setInput(await blobToDataUrl(blob));
  // The file field names the result it now holds, rather than "No file chosen".
  const files = new DataTransfer();
  files.items.add(new File([blob], `result-seed-${state.lastSeed}.png`, { type: blob.type || "image/png" }));
  $("upload").files = files.files;
  clearFieldErrors();
  const task = currentTask() === "text2img" ? "img2img" : currentTask();
  document.querySelector(`input[name=task][value=${task}]`).checked = true;
  onTaskChange();
}

export function blobToDataUrl(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

function onTaskChange() {
  const task = currentTask();
  $("input-box").hidden = task === "text2img";
  $("mask").hidden = $("mask-tools").hidden = task !== "inpaint";
  // The server's defaults: 0.6 to edit, 1.0 to inpaint.
  $("strength").value = task === "inpaint" ? 1 : 0.6;
  $("strength-value").textContent = $("strength").value;
  // Each mode starts at its natural size: the model's for text to image, the input's for an edit.
  if ($("size").value !== "custom") {
    $("size").value = "";
    fillSizes(task === "text2img" ? "" : "input");
  }
}

function paintMask() {
  const canvas = $("mask");
  const ctx = canvas.getContext("2d");
  let drawing = false;
  // The brush size is in screen pixels; the canvas has the input image's own pixels.
  const radius = () => (Number($("brush").value) * canvas.width) / canvas.getBoundingClientRect().width / 2;
  const paintAt = (x, y) => {
    ctx.fillStyle = "#fff";
    ctx.beginPath();
    ctx.arc(x, y, radius(), 0, 2 * Math.PI);
    ctx.fill();
  };
  const dot = (e) => {
    const box = canvas.getBoundingClientRect();
    paintAt(((e.clientX - box.left) * canvas.width) / box.width, ((e.clientY - box.top) * canvas.height) / box.height);
  };
  // By keyboard: arrows move the brush (Shift: further), Space or Enter paints where it is, shown by a ring.
  const spot = { x: null, y: null };
  const ring = document.createElement("div");
  ring.id = "mask-spot";
  ring.hidden = true;
  canvas.after(ring);
  const showSpot = () => {
    const scale = canvas.getBoundingClientRect().width / canvas.width;
    const size = 2 * radius() * scale;
    ring.style.width = ring.style.height = `${size}px`;
    ring.style.left = `${spot.x * scale - size / 2}px`;
    ring.style.top = `${spot.y * scale - size / 2}px`;
    ring.hidden = false;
  };
  const MOVES = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
  canvas.addEventListener("keydown", (e) => {
    if (spot.x === null) [spot.x, spot.y] = [canvas.width / 2, canvas.height / 2];
    if (MOVES[e.key]) {
      const step = radius() * (e.shiftKey ? 2 : 0.5);
      spot.x = Math.min(canvas.width, Math.max(0, spot.x + MOVES[e.key][0] * step));
      spot.y = Math.min(canvas.height, Math.max(0, spot.y + MOVES[e.key][1] * step));
    } else if (e.key === " " || (e.key === "Enter" && !e.ctrlKey && !e.metaKey)) {
      paintAt(spot.x, spot.y);
    } else {
      return;
    }
    e.preventDefault();
    showSpot();
  });
  canvas.addEventListener("focus", () => { if (spot.x !== null) showSpot(); });
  canvas.addEventListener("blur", () => { ring.hidden = true; });
  canvas.addEventListener("pointerdown", (e) => { drawing = true; canvas.setPointerCapture(e.pointerId); dot(e); });
  canvas.addEventListener("pointermove", (e) => { if (drawing) dot(e); });
  canvas.addEventListener("pointerup", () => { drawing = false; });
  $("clear-mask").addEventListener("click", () => ctx.clearRect(0, 0, canvas.width, canvas.height));
}

// White where painted (repaint), black elsewhere (keep), at the input image's size.
function maskDataUrl() {
  const painted = $("mask");
  const out = document.createElement("canvas");
  out.width = painted.width;
  out.height = painted.height;
  const ctx = out.getContext("2d");
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, out.width, out.height);
  ctx.drawImage(painted, 0, 0);
  return out.toDataURL("image/png");
}

function wire() {
  $("form").addEventListener("submit", (e) => { e.preventDefault(); submit(); });
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); submit(); }
  });
  document.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey) && e.target !== $("prompt")) { e.preventDefault(); submit(); }
  });
  $("model").addEventListener("change", describeModel);
  $("template").addEventListener("change", applyTemplate);
  $("prompt").addEventListener("input", onPromptEdit);
  $("size").addEventListener("change", () => { $("custom-size").hidden = $("size").value !== "custom"; });
  // A drawn seed, shown, so that a result worth keeping can be made again.
  $("seed-random").addEventListener("click", () => {
    $("seed").value = Math.floor(Math.random() * (declared("seed").maximum + 1));
  });
  $("seed-last").addEventListener("click", () => { if (state.lastSeed !== null) $("seed").value = state.lastSeed; });
  $("cancel").addEventListener("click", cancel);
  $("use-input").addEventListener("click", useResultAsInput);
  $("upload").addEventListener("change", async () => {
    const file = $("upload").files[0];
    if (!file) return;
    try {
      // Decoding it here refuses a file that is no image at once, instead of after Generate.
      (await createImageBitmap(file)).close();
    } catch {
      $("upload").value = "";
      showFieldError(new FieldError($("upload"), "That file is not an image: choose a PNG, JPEG or WebP file."));
      return;
    }
    setInput(await blobToDataUrl(file));
  });
  for (const radio of document.querySelectorAll("input[name=task]")) radio.addEventListener("change", onTaskChange);
  // A field the page refused is fine again once the user changes it.
  $("form").addEventListener("input", (e) => {
    if (e.target.id) document.getElementById(`${e.target.id}-error`)?.setAttribute("hidden", "");
    e.target.removeAttribute?.("aria-invalid");
  });
  $("strength").addEventListener("input", () => { $("strength-value").textContent = $("strength").value; });
  paintMask();
  $("login").addEventListener("submit", (e) => { e.preventDefault(); logIn(); });
  $("forget-key").addEventListener("click", forgetKey);
  $("forget-key").hidden = !localStorage.getItem(KEY_STORE);
}

async function load() {
  clearError();
  try {
    await Promise.all([loadModels(), loadTemplates(), loadPolicy(), loadFields()]);
    await loadLoras();
    document.body.dataset.ready = "true";
  } catch (error) {
    // A missing or wrong key shows the key field (askForKey) instead.
    if (error.code !== "unauthorized") showError(error);
    return;
  }
  loadHistory();
  resumeJob();
}

async function start() {
  wire();
  onTaskChange();
  await load();
}

start();
