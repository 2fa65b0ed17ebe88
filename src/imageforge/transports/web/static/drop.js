// An input image can also be dropped anywhere on the page or pasted (Ctrl/Cmd-V); either switches a
// text-to-image form to Edit, as "Use as input" does.
import { blobToDataUrl, setInput, showError } from "./app.js";

function imageFile(transfer) {
  return [...(transfer?.files || [])].find((file) => file.type.startsWith("image/"));
}

async function take(file) {
  setInput(await blobToDataUrl(file));
  const task = document.querySelector("input[name=task]:checked");
  if (task.value === "text2img") {
    const edit = document.querySelector("input[name=task][value=img2img]");
    if (edit.disabled) return;
    edit.checked = true;
    edit.dispatchEvent(new Event("change", { bubbles: true }));
  }
}

document.addEventListener("dragover", (e) => {
  if (![...e.dataTransfer.types].includes("Files")) return;
  e.preventDefault();
  document.body.classList.add("dropping");
});
document.addEventListener("dragleave", (e) => {
  if (e.relatedTarget === null) document.body.classList.remove("dropping");
});
document.addEventListener("drop", (e) => {
  document.body.classList.remove("dropping");
  if (!e.dataTransfer?.files.length) return;
  // Without this the browser would navigate away to the dropped file.
  e.preventDefault();
  const file = imageFile(e.dataTransfer);
  if (file) take(file);
  else showError({ message: "Only an image can be used as input.", hint: "Drop a PNG, JPEG or WebP file." });
});
// Pasted text goes where it always goes; only a pasted image is taken as the input.
document.addEventListener("paste", (e) => {
  const file = imageFile(e.clipboardData);
  if (!file) return;
  // Office copies text with a picture of it: pasted into a text field, that is text.
  const inText = e.target instanceof HTMLTextAreaElement || e.target instanceof HTMLInputElement;
  if (inText && e.clipboardData.types.includes("text/plain")) return;
  e.preventDefault();
  take(file);
});
