// Before/after for Edit and Inpaint: the input image lies over the result, cut at a slider's position, so that
// dragging it wipes between what went in and what came out.
const $ = (id) => document.getElementById(id);
// The input each job was submitted with, by job id: the result itself does not carry it.
const inputs = new Map();

const result = $("result-image");
const frame = document.createElement("div");
frame.id = "compare-frame";
result.before(frame);
frame.append(result);
const before = document.createElement("img");
before.id = "compare-before";
before.alt = "Input image, before";
before.hidden = true;
frame.append(before);

const control = document.createElement("div");
control.id = "compare-control";
control.className = "row";
control.hidden = true;
const label = document.createElement("label");
label.htmlFor = "compare";
label.textContent = "Before / after";
const slider = document.createElement("input");
slider.type = "range";
slider.id = "compare";
slider.min = "0";
slider.max = "100";
slider.value = "50";
control.append(label, slider);
frame.after(control);

function cut() {
  // The input shows left of the slider's position, the result right of it.
  before.style.clipPath = `inset(0 ${100 - Number(slider.value)}% 0 0)`;
}

document.addEventListener("imageforge:job", (e) => {
  const { job } = e.detail;
  const task = document.querySelector("input[name=task]:checked").value;
  if (task !== "text2img") inputs.set(job.job_id, $("input-image").src);
});

document.addEventListener("imageforge:result", (e) => {
  const input = inputs.get(e.detail.job.job_id);
  control.hidden = before.hidden = !input;
  if (!input) return;
  before.src = input;
  slider.value = "50";
  cut();
});

slider.addEventListener("input", cut);
