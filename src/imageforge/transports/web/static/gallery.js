// The gallery: every kept result (GET /jobs?status=succeeded, up to the API's 500), where History shows the last 20,
// as a grid with prompts in a dialog; a click restores one as History does, and each can be deleted for good
// (DELETE /jobs/{id}/result) after a confirmation in the tile itself.
import { api, loadHistory, restore, showError } from "./app.js";

const LIMIT = 500;

const open = document.createElement("button");
open.type = "button";
open.id = "open-gallery";
open.textContent = "All results";
document.getElementById("history").before(open);

const dialog = document.createElement("dialog");
dialog.id = "gallery";
dialog.setAttribute("aria-label", "All results");
const bar = document.createElement("div");
bar.className = "row";
const title = document.createElement("h2");
const close = document.createElement("button");
close.type = "button";
close.textContent = "Close";
bar.append(title, close);
const grid = document.createElement("ol");
grid.className = "gallery-grid";
dialog.append(bar, grid);
document.body.append(dialog);

function tile(job) {
  const prompt = job.result.original_prompt || job.result.prompt;
  const item = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  const img = document.createElement("img");
  img.src = job.links.image;
  img.alt = `Restore: ${prompt}`;
  img.loading = "lazy";
  const caption = document.createElement("span");
  caption.textContent = prompt;
  caption.setAttribute("aria-hidden", "true");
  button.append(img, caption);
  button.addEventListener("click", () => { dialog.close(); restore(job); });
  item.append(button, deleteControls(job, prompt, item));
  return item;
}

// A Delete button that asks again in place (a native confirm dialog would block the page): Delete, or Keep.
function deleteControls(job, prompt, item) {
  const controls = document.createElement("div");
  controls.className = "gallery-delete";
  const ask = document.createElement("button");
  ask.type = "button";
  ask.textContent = "Delete";
  ask.setAttribute("aria-label", `Delete: ${prompt}`);
  const question = document.createElement("span");
  question.textContent = "Delete for good?";
  const yes = document.createElement("button");
  yes.type = "button";
  yes.textContent = "Delete";
  yes.setAttribute("aria-label", `Yes, delete: ${prompt}`);
  const keep = document.createElement("button");
  keep.type = "button";
  keep.textContent = "Keep";
  const confirming = (on) => {
    ask.hidden = on;
    for (const part of [question, yes, keep]) part.hidden = !on;
  };
  confirming(false);
  ask.addEventListener("click", () => { confirming(true); keep.focus(); });
  keep.addEventListener("click", () => { confirming(false); ask.focus(); });
  yes.addEventListener("click", async () => {
    try {
      await api(`/jobs/${encodeURIComponent(job.job_id)}/result`, { method: "DELETE" });
    } catch (error) {
      // job_not_found: it is gone already (deleted from another tab, or expired and swept).
      if (error.code !== "job_not_found") {
        confirming(false);
        showError(error);
        return;
      }
    }
    item.remove();
    title.textContent = `All results (${grid.children.length})`;
    loadHistory();
  });
  controls.append(ask, question, yes, keep);
  return controls;
}

async function show() {
  try {
    const body = await api(`/jobs?status=succeeded&limit=${LIMIT}`);
    const jobs = body.jobs.filter((job) => job.result && job.links.image);
    title.textContent = `All results (${jobs.length})`;
    grid.replaceChildren(...jobs.map(tile));
    dialog.showModal();
  } catch (error) {
    showError(error);
  }
}

open.addEventListener("click", show);
close.addEventListener("click", () => dialog.close());
dialog.addEventListener("click", (e) => { if (e.target === dialog) dialog.close(); });
