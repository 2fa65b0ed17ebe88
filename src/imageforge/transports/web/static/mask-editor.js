// The inpainting mask editor: a brush and an eraser drawn as strokes, undo/redo (buttons, and Ctrl/Cmd-Z or
// Ctrl/Cmd-Shift-Z / Ctrl-Y outside text fields, so the prompt's own text undo is never taken over), an outline
// cursor the size of the brush, the size as a number too, and Invert. The canvas keeps what the server wants (white
// where painted, transparent elsewhere); features.css only shows it in a visible colour.
const $ = (id) => document.getElementById(id);
const canvas = $("mask");
const ctx = canvas.getContext("2d");
const MAX_UNDO = 40;
let undo = [];
let redo = [];
let erasing = false;
let stroke = null;

function button(id, label) {
  const b = document.createElement("button");
  b.type = "button";
  b.id = id;
  b.textContent = label;
  return b;
}

const brushButton = button("mask-brush", "Brush");
const eraserButton = button("mask-eraser", "Eraser");
const undoButton = button("mask-undo", "Undo");
const redoButton = button("mask-redo", "Redo");
const invertButton = button("mask-invert", "Invert");
const sizeLabel = document.createElement("label");
sizeLabel.textContent = "Brush diameter (px)";
sizeLabel.htmlFor = "brush-size";
const size = document.createElement("input");
size.type = "number";
size.id = "brush-size";
size.min = $("brush").min;
size.max = $("brush").max;
size.value = $("brush").value;
const tools = document.createElement("div");
tools.className = "row mask-buttons";
tools.append(brushButton, eraserButton, undoButton, redoButton, invertButton);
$("brush").after(sizeLabel, size);
$("mask-tools").append(tools);

const cursor = document.createElement("div");
cursor.id = "brush-cursor";
cursor.hidden = true;
$("input-stage").append(cursor);

function syncButtons() {
  brushButton.setAttribute("aria-pressed", String(!erasing));
  eraserButton.setAttribute("aria-pressed", String(erasing));
  undoButton.disabled = undo.length === 0;
  redoButton.disabled = redo.length === 0;
}

function snapshot() {
  return ctx.getImageData(0, 0, canvas.width, canvas.height);
}

function remember() {
  if (!canvas.width || !canvas.height) return;
  undo.push(snapshot());
  if (undo.length > MAX_UNDO) undo.shift();
  redo = [];
  syncButtons();
}

function step(from, to) {
  if (!from.length) return;
  to.push(snapshot());
  ctx.putImageData(from.pop(), 0, 0);
  syncButtons();
}

function toCanvas(e) {
  const box = canvas.getBoundingClientRect();
  return {
    x: ((e.clientX - box.left) * canvas.width) / box.width,
    y: ((e.clientY - box.top) * canvas.height) / box.height,
    scale: canvas.width / box.width,
  };
}

function paint(from, to) {
  ctx.globalCompositeOperation = erasing ? "destination-out" : "source-over";
  ctx.strokeStyle = ctx.fillStyle = "#fff";
  ctx.lineCap = ctx.lineJoin = "round";
  ctx.lineWidth = Number($("brush").value) * to.scale;
  ctx.beginPath();
  ctx.moveTo(from.x, from.y);
  ctx.lineTo(to.x + 0.01, to.y);
  ctx.stroke();
  ctx.globalCompositeOperation = "source-over";
}

function moveCursor(e) {
  const stage = $("input-stage").getBoundingClientRect();
  const diameter = Number($("brush").value);
  cursor.style.width = cursor.style.height = `${diameter}px`;
  cursor.style.left = `${e.clientX - stage.left - diameter / 2}px`;
  cursor.style.top = `${e.clientY - stage.top - diameter / 2}px`;
  cursor.hidden = false;
}

// Captured on the stage, before the canvas's own plain brush: strokes here are what undo takes back.
const stage = $("input-stage");
stage.addEventListener("pointerdown", (e) => {
  if (e.target !== canvas) return;
  e.stopPropagation();
  canvas.focus();
  canvas.setPointerCapture(e.pointerId);
  remember();
  stroke = toCanvas(e);
  paint(stroke, stroke);
}, true);
stage.addEventListener("pointermove", (e) => {
  if (e.target !== canvas) return;
  e.stopPropagation();
  moveCursor(e);
  if (!stroke) return;
  const next = toCanvas(e);
  paint(stroke, next);
  stroke = next;
}, true);
stage.addEventListener("pointerup", (e) => {
  if (e.target !== canvas) return;
  e.stopPropagation();
  stroke = null;
}, true);
canvas.addEventListener("pointerleave", () => { cursor.hidden = true; });

function invert() {
  remember();
  const image = snapshot();
  const px = image.data;
  for (let i = 0; i < px.length; i += 4) {
    const painted = px[i + 3] > 0;
    px[i] = px[i + 1] = px[i + 2] = 255;
    px[i + 3] = painted ? 0 : 255;
  }
  ctx.putImageData(image, 0, 0);
}

function isTextField(target) {
  return target instanceof HTMLTextAreaElement || (target instanceof HTMLInputElement && !["range", "radio", "checkbox", "button"].includes(target.type));
}

document.addEventListener("keydown", (e) => {
  if (!(e.ctrlKey || e.metaKey) || $("mask-tools").hidden || isTextField(e.target)) return;
  const key = e.key.toLowerCase();
  if (key === "z" && !e.shiftKey) { e.preventDefault(); step(undo, redo); }
  else if ((key === "z" && e.shiftKey) || key === "y") { e.preventDefault(); step(redo, undo); }
});

brushButton.addEventListener("click", () => { erasing = false; syncButtons(); });
eraserButton.addEventListener("click", () => { erasing = true; syncButtons(); });
undoButton.addEventListener("click", () => step(undo, redo));
redoButton.addEventListener("click", () => step(redo, undo));
invertButton.addEventListener("click", invert);
size.addEventListener("input", () => { if (size.value) $("brush").value = size.value; });
$("brush").addEventListener("input", () => { size.value = $("brush").value; });
// Clear mask is a change too: remember the mask before it goes (capture runs before the button's own handler).
document.addEventListener("click", (e) => { if (e.target.id === "clear-mask") remember(); }, true);
// A new input image resizes, and so empties, the mask: nothing is left to undo.
document.addEventListener("imageforge:input", () => { undo = []; redo = []; syncButtons(); });
if (!canvas.hasAttribute("tabindex")) canvas.tabIndex = 0;
syncButtons();
