// Click-to-zoom: the result opens in a dialog at its full pixel size, scrollable where it is larger than the
// window, and enlarged to fill the window where it is smaller; Escape, Close or a click outside closes it.
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

function fit() {
  if (!full.naturalWidth) return;
  const scale = Math.min((0.92 * innerWidth) / full.naturalWidth, (0.92 * innerHeight) / full.naturalHeight);
  full.style.width = `${full.naturalWidth * Math.max(1, scale)}px`;
}
full.addEventListener("load", fit);

function open() {
  if (!result.src) return;
  full.src = result.src;
  full.alt = `Full size: ${result.alt}`;
  // An image already in the cache may be complete before a load listener could hear it.
  if (full.complete) fit();
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
