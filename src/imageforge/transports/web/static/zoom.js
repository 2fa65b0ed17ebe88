// Click-to-zoom: the result opens in a dialog at its full pixel size, scrollable where it is larger than the
// window; Escape, the Close button or a click outside the image closes it.
const result = document.getElementById("result-image");

const dialog = document.createElement("dialog");
dialog.id = "zoom";
dialog.setAttribute("aria-label", "Full-size image");
const close = document.createElement("button");
close.type = "button";
close.textContent = "Close";
const full = document.createElement("img");
full.alt = "Full-size result";
dialog.append(close, full);
document.body.append(dialog);

function open() {
  if (!result.src) return;
  full.src = result.src;
  full.alt = `Full size: ${result.alt}`;
  dialog.showModal();
  close.focus();
}

result.title = "Click to view at full size";
// Reachable by keyboard too: Enter or Space on the focused result opens it.
result.tabIndex = 0;
result.addEventListener("click", open);
result.addEventListener("keydown", (e) => {
  if (e.key === "Enter" || e.key === " ") { e.preventDefault(); open(); }
});
close.addEventListener("click", () => dialog.close());
// A click on the backdrop lands on the dialog itself, not on its contents.
dialog.addEventListener("click", (e) => { if (e.target === dialog) dialog.close(); });
