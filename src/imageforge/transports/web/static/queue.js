// More prompts can be queued while one runs ("Add to queue"), and a Queue panel lists this caller's queued and
// running jobs (GET /jobs) with their position, each with its own Cancel (DELETE /jobs/{id}). A queued job that
// succeeds shows its image and joins History, as a generation from the form does.
import { api, loadHistory, requestBody, showError, clearError, showResult } from "./app.js";

const POLL_MS = 1000;
// Prompts of the jobs queued from this page: the job list carries no prompt before a job has a result.
const prompts = new Map();
let watched = new Set();
// The job the form itself follows has its progress and Cancel above the result already.
let followed = null;
let timer = null;

const add = document.createElement("button");
add.type = "button";
add.id = "add-to-queue";
add.textContent = "Add to queue";
document.getElementById("generate").after(add);

const panel = document.createElement("section");
panel.id = "queue-panel";
panel.setAttribute("aria-label", "Queue");
panel.hidden = true;
const heading = document.createElement("h2");
heading.textContent = "Queue";
const list = document.createElement("ol");
list.id = "queue";
panel.append(heading, list);
document.querySelector("#result-panel h2").before(panel);

function describe(job) {
  const name = prompts.get(job.job_id) || `${job.task} on ${job.model}`;
  let where;
  if (job.status === "running") {
    where = job.progress.total ? `running, step ${job.progress.step} of ${job.progress.total}` : "running";
  } else {
    where = `queued, position ${job.queue_position}`;
  }
  return { name, where };
}

function render(jobs) {
  list.replaceChildren(...jobs.map((job) => {
    const { name, where } = describe(job);
    const item = document.createElement("li");
    const text = document.createElement("span");
    text.className = "queue-prompt";
    text.textContent = name;
    const status = document.createElement("span");
    status.className = "queue-status";
    status.textContent = where;
    const cancel = document.createElement("button");
    cancel.type = "button";
    cancel.textContent = "Cancel";
    cancel.setAttribute("aria-label", `Cancel ${name}`);
    cancel.addEventListener("click", () => cancelJob(job.job_id, cancel));
    item.append(text, status, cancel);
    return item;
  }));
  panel.hidden = jobs.length === 0;
}

async function cancelJob(jobId, button) {
  button.disabled = true;
  try {
    await api(`/jobs/${encodeURIComponent(jobId)}`, { method: "DELETE" });
  } catch (error) {
    // job_finished: it ended before the cancel arrived.
    if (error.code !== "job_finished") showError(error);
  }
  refresh();
}

// A job queued from this page that has left the list has ended: show how.
async function ended(jobId) {
  prompts.delete(jobId);
  try {
    const job = await api(`/jobs/${encodeURIComponent(jobId)}`);
    if (job.status === "succeeded") {
      showResult(job);
      loadHistory();
    } else if (job.error && job.status !== "cancelled") {
      showError(job.error);
    }
  } catch {
    // Expired or removed meanwhile: nothing left to show.
  }
}

async function refresh() {
  clearTimeout(timer);
  try {
    const body = await api("/jobs?status=running&status=queued&limit=100");
    // Oldest first, the order they will run in; the running one on top.
    const jobs = body.jobs.reverse().sort((a, b) => (a.queue_position ?? 0) - (b.queue_position ?? 0));
    render(jobs.filter((job) => job.job_id !== followed));
    const active = new Set(jobs.map((job) => job.job_id));
    for (const jobId of watched) if (!active.has(jobId) && prompts.has(jobId)) ended(jobId);
    watched = active;
    if (jobs.length) timer = setTimeout(refresh, POLL_MS);
  } catch {
    // The panel is a convenience: a failed poll is retried while jobs are known to be waiting.
    if (watched.size) timer = setTimeout(refresh, POLL_MS);
  }
}

async function enqueue() {
  clearError();
  let body;
  try {
    body = requestBody();
  } catch (error) {
    showError(error);
    return;
  }
  try {
    const job = await api("/jobs", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    prompts.set(job.job_id, body.prompt);
    watched.add(job.job_id);
  } catch (error) {
    showError(error);
  }
  refresh();
}

add.addEventListener("click", enqueue);
// A job started from the form shows in the panel too, with whatever else this caller has waiting.
document.addEventListener("imageforge:job", (e) => { followed = e.detail.job.job_id; refresh(); });
document.addEventListener("imageforge:result", () => refresh());
if (document.body.dataset.ready === "true") refresh();
else new MutationObserver((_, observer) => {
  if (document.body.dataset.ready === "true") { observer.disconnect(); refresh(); }
}).observe(document.body, { attributes: true, attributeFilter: ["data-ready"] });
