// camlens explorer: the page of `camlens serve`. Everything comes from this server (no CDN);
// every string from a user, a file or a model reaches the page through textContent, not
// as markup.
"use strict";

const state = {
  models: [],        // GET /api/models
  methods: [],       // GET /api/methods
  model: null,       // the chosen model's description
  layers: null,      // GET /api/models/NAME/layers
  inputs: [],        // [{name, blob, url, words?}]
  result: null,      // the last answer
  seen: new WeakMap(),  // input -> Map(model name -> the input as that model saw it)
  busy: false,
  pending: false,    // settings changed while a request ran
};

const $ = (id) => document.getElementById(id);

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function setStatus(text, isError = false) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("error", isError);
}

async function getJSON(url, options) {
  const response = await fetch(url, options);
  let body = null;
  try {
    body = await response.json();
  } catch (error) {
    throw new Error(`${url}: ${response.status} ${response.statusText}`);
  }
  if (!response.ok) throw new Error(body && body.error ? body.error : `status ${response.status}`);
  return body;
}

// --- models, methods, layers ---------------------------------------------------------------

async function loadModels() {
  const [models, methods] = await Promise.all([getJSON("/api/models"), getJSON("/api/methods")]);
  state.models = models.models;
  state.methods = methods.methods;
  const select = $("model");
  select.replaceChildren();
  for (const kind of ["image", "caption", "audio"]) {
    const group = document.createElement("optgroup");
    group.label = {image: "pictures", caption: "captions", audio: "recordings"}[kind];
    for (const model of state.models.filter((m) => m.kind === kind)) {
      const option = el("option", model.name);
      option.value = model.name;
      group.append(option);
    }
    if (group.children.length) select.append(group);
  }
  select.addEventListener("change", () => chooseModel(select.value));
  if (state.models.length) await chooseModel(state.models[0].name);
}

async function chooseModel(name) {
  const model = state.models.find((m) => m.name === name);
  const previousKind = state.model ? state.model.kind : null;
  state.model = model;
  $("model").value = name;
  $("model-description").textContent = model.description;
  const isAudio = model.kind === "audio";
  $("files").accept = isAudio ? "audio/*" : "image/*";
  $("drop-hint").textContent = isAudio ? "a recording: WAV, FLAC, OGG" :
    (model.kind === "caption" ? "one picture of digits in a row" : "one or more pictures");
  $("layer-box").hidden = isAudio;
  $("target-box").hidden = model.kind !== "image";
  $("audit-box").hidden = model.kind !== "image";
  setTargetModes(model);
  if (previousKind !== model.kind) {
    state.inputs = [];
    renderInputs();
    $("output").replaceChildren();
    $("downloads").hidden = true;
  }
  renderMethods();
  renderClasses();
  await Promise.all([loadSamples(), loadLayers()]);
  scheduleRun();
}

function renderMethods() {
  const box = $("methods");
  box.replaceChildren();
  const kind = state.model.kind;
  const own = {"accent-attention": ["attention", "attention-gradient", "gradcam"],
               "accent-cnn": ["gradcam"]}[state.model.name];
  const methods = kind === "audio" ? state.methods.filter((m) => own && own.includes(m.name)) :
    state.methods.filter((m) => m.kinds.includes(kind));
  const chosen = kind === "audio" ? methods.map((m) => m.name) :
    [kind === "caption" ? "layercam" : "gradcam"];
  for (const method of methods) {
    const label = el("label", undefined, "method");
    const box_ = document.createElement("input");
    box_.type = kind === "caption" ? "radio" : "checkbox";
    box_.name = "method";
    box_.value = method.name;
    box_.checked = chosen.includes(method.name);
    box_.addEventListener("change", scheduleRun);
    label.title = method.summary;
    label.append(box_, document.createTextNode(` ${method.name}`));
    box.append(label);
  }
}

function chosenMethods() {
  return [...document.querySelectorAll("#methods input:checked")].map((box) => box.value);
}

async function loadLayers() {
  const select = $("layer");
  select.replaceChildren();
  state.layers = null;
  if (state.model.kind === "audio") return;
  select.append(el("option", "reading the layers…"));
  try {
    state.layers = await getJSON(`/api/models/${encodeURIComponent(state.model.name)}/layers`);
  } catch (error) {
    select.replaceChildren(el("option", "model's layer"));
    $("layer-info").textContent = `cannot list the layers: ${error.message}`;
    return;
  }
  select.replaceChildren();
  const automatic = el("option", `automatic (${state.layers.automatic || "none found"})`);
  automatic.value = "auto";
  select.append(automatic);
  for (const row of state.layers.layers.filter((r) => r.explainable)) {
    const marks = [];
    if (row.automatic) marks.push("★ automatic");
    if (row.model_layer) marks.push("model's layer");
    const text = `${row.name} · ${row.type} · ${row.shape.join("×")} · reach ${row.reach}` +
      (marks.length ? ` · ${marks.join(", ")}` : "");
    const option = el("option", text);
    option.value = row.name;
    option.dataset.automatic = row.automatic ? "true" : "false";
    select.append(option);
  }
  const preferred = state.model.default_layer || "auto";
  select.value = [...select.options].some((o) => o.value === preferred) ? preferred : "auto";
  describeLayer();
  select.onchange = () => { describeLayer(); scheduleRun(); };
}

function chosenLayers() {
  const chosen = [...$("layer").selectedOptions].map((option) => option.value);
  return chosen.length ? chosen : ["auto"];
}

function describeLayer() {
  const value = chosenLayers()[0];
  const row = state.layers && state.layers.layers.find((r) => r.name === value);
  $("layer-info").textContent = value === "auto" ?
    "the last layer over the input's grid that every position of the score reaches" :
    (row ? `output ${row.shape.join("×")}, ${row.layout}; ${row.reach} positions reach the score` :
     "");
}

// --- targets -------------------------------------------------------------------------------

function renderClasses() {
  const list = $("class-list");
  list.replaceChildren();
  const names = state.model.class_names || [];
  names.forEach((name, index) => {
    const label = el("label", undefined, "class");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.value = String(index);
    box.addEventListener("change", scheduleRun);
    label.dataset.search = `${index} ${name}`.toLowerCase();
    label.append(box, document.createTextNode(` ${name}`));
    list.append(label);
  });
  $("class-search").value = "";
}

// A detector also takes its detections, and a box drawn on the input with the mouse; a
// CLIP-style model takes text prompts.
function setTargetModes(model) {
  const select = $("target-mode");
  for (const option of [...select.options]) {
    if (option.dataset.detector) option.remove();
  }
  state.box = null;
  if (model.prompts) {
    const option = el("option", "text prompts I write");
    option.value = "prompts";
    option.dataset.detector = "true";
    select.append(option);
    select.value = "prompts";
  }
  showTargetPickers();
  if (!model.detector) return;
  for (const [value, text] of [["detections", "every detection (score ≥ 0.5)"],
                               ["box", "a box I draw on the input"]]) {
    const option = el("option", text);
    option.value = value;
    option.dataset.detector = "true";
    select.append(option);
  }
  select.value = "detections";
}

function showTargetPickers() {
  $("class-picker").hidden = $("target-mode").value !== "classes";
  $("prompt-picker").hidden = $("target-mode").value !== "prompts";
}

function targetText() {
  const mode = $("target-mode").value;
  if (mode === "box") return state.box || "detections";
  if (mode === "prompts") return `text:${$("prompts").value.trim() || "a photo"}`;
  if (mode !== "classes") return mode;
  const chosen = [...document.querySelectorAll("#class-list input:checked")].map((b) => b.value);
  return chosen.length ? chosen.join(",") : "top1";
}

// --- inputs and samples --------------------------------------------------------------------

async function loadSamples() {
  const box = $("samples");
  box.replaceChildren();
  const kind = state.model.kind;
  box.append(el("span", kind === "audio" ? "preparing sample recordings…" : "samples:", "hint"));
  let samples;
  try {
    samples = (await getJSON(`/api/samples?kind=${kind === "audio" ? "audio" : "image"}`)).samples;
  } catch (error) {
    box.replaceChildren(el("span", `no samples: ${error.message}`, "hint"));
    return;
  }
  box.replaceChildren(el("span", "samples:", "hint"));
  // scenes of several digits suit a captioner and a detector alike
  const wanted = kind === "caption" || state.model.detector ? "caption" :
    (kind === "audio" ? "audio" : "image");
  for (const sample of samples.filter((s) => s.for === wanted)) {
    const button = el("button", undefined, "sample");
    button.type = "button";
    button.dataset.sample = sample.id;
    button.title = sample.label;
    if (sample.kind === "image") {
      const thumb = document.createElement("img");
      thumb.src = sample.url;
      thumb.alt = sample.label;
      button.append(thumb);
    } else {
      button.textContent = sample.label;
    }
    button.addEventListener("click", async () => {
      const blob = await (await fetch(sample.url)).blob();
      addInputs([{name: `${sample.id}.${sample.kind === "audio" ? "wav" : "png"}`, blob,
                  words: sample.words}], !kindTakesMany());
    });
    box.append(button);
  }
}

function kindTakesMany() {
  return state.model.kind === "image";
}

function addInputs(items, replace) {
  if (replace || !kindTakesMany()) {
    for (const input of state.inputs) URL.revokeObjectURL(input.url);
    state.inputs = [];
  }
  for (const item of items.slice(0, kindTakesMany() ? 16 : 1)) {
    state.inputs.push({...item, url: URL.createObjectURL(item.blob)});
  }
  renderInputs();
  scheduleRun();
}

function renderInputs() {
  const list = $("inputs");
  list.replaceChildren();
  state.inputs.forEach((input, position) => {
    const item = el("li");
    item.append(el("span", input.name));
    const remove = el("button", "×", "remove");
    remove.type = "button";
    remove.title = `remove ${input.name}`;
    remove.addEventListener("click", () => {
      URL.revokeObjectURL(input.url);
      state.inputs.splice(position, 1);
      renderInputs();
      scheduleRun();
    });
    item.append(remove);
    list.append(item);
  });
}

function setUpDropZone() {
  const drop = $("drop");
  $("files").addEventListener("change", (event) => {
    addInputs([...event.target.files].map((file) => ({name: file.name, blob: file})), true);
    event.target.value = "";
  });
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    addInputs([...event.dataTransfer.files].map((file) => ({name: file.name, blob: file})), true);
  });
}

// --- running -------------------------------------------------------------------------------

let runTimer = null;

function scheduleRun() {
  clearTimeout(runTimer);
  runTimer = setTimeout(run, 150);
}

async function run() {
  $("readout").textContent = "hover over a map to read its value";
  if (!state.model || !state.inputs.length) {
    setStatus(state.model ? "choose or drop an input, or click a sample" : "");
    return;
  }
  if (state.busy) { state.pending = true; return; }
  state.busy = true;
  document.body.dataset.busy = "true";
  const kind = state.model.kind;
  const modelName = state.model.name;
  const inputs = [...state.inputs];
  const form = new FormData();
  form.append("model", modelName);
  for (const method of chosenMethods()) form.append("method", method);
  let url = "/api/explain";
  if (kind === "audio") {
    url = "/api/explain-audio";
    form.append("audio", state.inputs[0].blob, state.inputs[0].name);
    if (state.inputs[0].words) form.append("words", JSON.stringify(state.inputs[0].words));
  } else {
    const layers = chosenLayers();
    form.append("layer", kind === "caption" ? layers[0] : layers.join(","));
    if (kind === "caption") {
      url = "/api/caption";
      form.append("image", state.inputs[0].blob, state.inputs[0].name);
    } else {
      form.append("target", targetText());
      // the page lays the coloured map over the input itself: no overlay PNGs; and the input
      // as the model saw it is asked for once per input and model, then reused
      form.append("heatmap", "true");
      form.append("overlay", "false");
      if (inputs.every((input) => seenBy(input, modelName))) form.append("input", "false");
      for (const input of inputs) form.append("image", input.blob, input.name);
    }
  }
  setStatus("explaining…");
  const started = performance.now();
  try {
    const result = await getJSON(url, {method: "POST", body: form});
    state.result = result;
    const seconds = ((performance.now() - started) / 1000).toFixed(2);
    setStatus(`done in ${seconds} s`);
    if (kind === "audio") renderAudio(result);
    else if (kind === "caption") renderCaption(result);
    else {
      result.images.forEach((image, position) => {
        const input = inputs[position];
        if (!state.seen.has(input)) state.seen.set(input, new Map());
        if (image.input) state.seen.get(input).set(modelName, image.input);
        else image.input = seenBy(input, modelName);
      });
      renderImages(result);
    }
    $("downloads").hidden = false;
  } catch (error) {
    setStatus(error.message, true);
  } finally {
    state.busy = false;
    delete document.body.dataset.busy;
    if (state.pending) { state.pending = false; scheduleRun(); }
  }
}

// --- pictures ------------------------------------------------------------------------------

// The input as model `name` saw it, from an earlier answer, or undefined (a Map: a model
// called "constructor" or "__proto__" is a name like any other, not an object's property).
function seenBy(input, name) {
  const pictures = state.seen.get(input);
  return pictures ? pictures.get(name) : undefined;
}

function decodeValues(base64) {
  const text = atob(base64);
  const values = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) values[i] = text.charCodeAt(i);
  return values;
}

function opacity() {
  return Number($("opacity").value) / 100;
}

// A stacked figure: the input, the coloured map over it at the slider's opacity, hover values.
function mapFigure(inputUrl, cell, caption, inputSize) {
  const figure = el("figure", undefined, "map");
  const stack = el("div", undefined, "stack");
  const base = document.createElement("img");
  base.src = inputUrl;
  base.alt = "input";
  base.className = "base";
  const heat = document.createElement("img");
  heat.src = cell.heatmap || cell.overlay;
  heat.alt = caption;
  heat.className = cell.heatmap ? "heat" : "heat overlay";
  heat.style.opacity = cell.heatmap ? opacity() : 1;
  stack.append(base, heat);
  if (cell.box && inputSize) stack.append(boxOutline(cell.box, inputSize));
  const values = decodeValues(cell.values);
  const [rows, columns] = cell.value_shape;
  stack.addEventListener("mousemove", (event) => {
    const box = stack.getBoundingClientRect();
    const x = Math.min(columns - 1, Math.floor((event.clientX - box.left) / box.width * columns));
    const y = Math.min(rows - 1, Math.floor((event.clientY - box.top) / box.height * rows));
    let text = `${caption}: map ${(values[y * columns + x] / 255).toFixed(2)}`;
    if (inputSize) {
      const px = Math.floor((event.clientX - box.left) / box.width * inputSize[1]);
      const py = Math.floor((event.clientY - box.top) / box.height * inputSize[0]);
      text += ` at pixel (${px}, ${py})`;
    }
    if (cell.raw && Array.isArray(cell.raw[0])) {
      const rawRows = cell.raw.length;
      const rawColumns = cell.raw[0].length;
      const ry = Math.min(rawRows - 1, Math.floor((event.clientY - box.top) / box.height * rawRows));
      const rx = Math.min(rawColumns - 1,
                          Math.floor((event.clientX - box.left) / box.width * rawColumns));
      text += `; raw ${cell.raw[ry][rx]} at cell (${rx}, ${ry}) of ${rawColumns}×${rawRows}`;
    }
    $("readout").textContent = text;
    stack.dataset.value = (values[y * columns + x] / 255).toFixed(2);
  });
  figure.append(stack);
  const label = el("figcaption", caption);
  const save = el("button", "PNG", "save");
  save.type = "button";
  save.title = `download ${caption} as PNG`;
  save.addEventListener("click", () => downloadComposite(base, heat, caption));
  label.append(" ", save);
  figure.append(label);
  return figure;
}

// A box (x0, y0, x1, y1 in the model input's pixels) drawn over a figure of that input.
function boxOutline(box, inputSize) {
  const [height, width] = inputSize;
  const outline = el("div", undefined, "box-outline");
  outline.style.left = `${100 * box[0] / width}%`;
  outline.style.top = `${100 * box[1] / height}%`;
  outline.style.width = `${100 * (box[2] - box[0]) / width}%`;
  outline.style.height = `${100 * (box[3] - box[1]) / height}%`;
  return outline;
}

// Drag on the input to draw a box; its corners in the model input's pixels become the target.
function boxDrawing(holder, inputSize) {
  holder.classList.add("drawable");
  holder.title = "drag to draw a box: its map is explained";
  let start = null;
  let outline = null;
  const point = (event) => {
    const area = holder.getBoundingClientRect();
    const x = Math.max(0, Math.min(1, (event.clientX - area.left) / area.width));
    const y = Math.max(0, Math.min(1, (event.clientY - area.top) / area.height));
    return [x * inputSize[1], y * inputSize[0]];
  };
  const corners = (a, b) => [Math.min(a[0], b[0]), Math.min(a[1], b[1]),
                             Math.max(a[0], b[0]), Math.max(a[1], b[1])];
  holder.addEventListener("mousedown", (event) => {
    event.preventDefault();
    start = point(event);
    if (outline) outline.remove();
    outline = boxOutline([...start, ...start], inputSize);
    outline.classList.add("drawing");
    holder.append(outline);
  });
  holder.addEventListener("mousemove", (event) => {
    if (!start) return;
    const box = corners(start, point(event));
    outline.replaceWith(outline = Object.assign(boxOutline(box, inputSize),
                                                {className: "box-outline drawing"}));
  });
  holder.addEventListener("mouseup", (event) => {
    if (!start) return;
    const box = corners(start, point(event)).map((v) => Math.round(v));
    start = null;
    if (box[2] - box[0] < 2 || box[3] - box[1] < 2) return;
    state.box = `box:${box.join(",")}`;
    holder.dataset.box = state.box;
    $("target-mode").value = "box";
    scheduleRun();
  });
}

function downloadComposite(base, heat, caption) {
  const canvas = document.createElement("canvas");
  canvas.width = base.naturalWidth;
  canvas.height = base.naturalHeight;
  const context = canvas.getContext("2d");
  context.drawImage(base, 0, 0);
  context.globalAlpha = heat.classList.contains("overlay") ? 1 : opacity();
  context.drawImage(heat, 0, 0, canvas.width, canvas.height);
  canvas.toBlob((blob) => saveBlob(blob, `${safeName(caption)}.png`));
}

function safeName(text) {
  return String(text).replace(/[^A-Za-z0-9._-]+/g, "_").slice(0, 80);
}

function saveBlob(blob, name) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}

function notesList(notes) {
  const list = el("ul", undefined, "notes");
  for (const note of notes) list.append(el("li", note));
  return list;
}

function renderImages(result) {
  const output = $("output");
  output.replaceChildren();
  for (const image of result.images) {
    const card = el("article", undefined, "card");
    card.append(el("h2", image.name));
    card.append(el("p", `${image.size[0]}×${image.size[1]} pixels, read by the model as ` +
      `${image.input_size[1]}×${image.input_size[0]}`, "hint"));
    const row = el("div", undefined, "row");
    const input = el("figure", undefined, "map input");
    const picture = document.createElement("img");
    picture.src = image.input;
    picture.alt = image.name;
    if (state.model.detector) {
      const holder = el("div", undefined, "stack");
      holder.append(picture);
      if (state.box && $("target-mode").value === "box") {
        holder.append(boxOutline(state.box.slice(4).split(",").map(Number), image.input_size));
      }
      boxDrawing(holder, image.input_size);
      input.append(holder, el("figcaption", "input: drag to draw a box"));
    } else {
      input.append(picture, el("figcaption", "input"));
    }
    row.append(input);
    const table = el("table", undefined, "grid");
    const head = el("tr");
    head.append(el("th", "class"));
    for (const explanation of image.explanations) {
      head.append(el("th", `${explanation.method} · ${explanation.layer}`));
    }
    table.append(head);
    const count = Math.max(...image.explanations.map((e) => e.maps.length));
    for (let k = 0; k < count; k++) {
      const line = el("tr");
      const first = image.explanations[0].maps[k];
      line.append(el("th", first ? `${first.class_name}` : ""));
      for (const explanation of image.explanations) {
        const cell = explanation.maps[k];
        const td = el("td");
        if (cell) {
          td.append(mapFigure(image.input, cell,
            `${explanation.method} · ${cell.class_name} · score ${cell.score.toFixed(3)}`,
            image.input_size));
          td.dataset.method = explanation.method;
          td.dataset.layer = explanation.layer;
          td.dataset.class = String(cell.class);
        }
        line.append(td);
      }
      table.append(line);
    }
    row.append(table);
    card.append(row);
    const notes = image.explanations.flatMap((e) => e.notes.map((n) => `${e.method}: ${n}`));
    if (notes.length) card.append(notesList(notes));
    output.append(card);
  }
}

// --- captions ------------------------------------------------------------------------------

function renderCaption(result) {
  const output = $("output");
  output.replaceChildren();
  const card = el("article", undefined, "card caption");
  card.append(el("h2", `“${result.caption || "(empty)"}”`));
  card.append(el("p", `${result.method} at ${result.layer}; click a word for its map`, "hint"));
  const words = el("div", undefined, "words");
  const shown = el("div", undefined, "row");
  const show = (cell, caption, button) => {
    shown.replaceChildren(mapFigure(result.input, cell, caption, result.input_size));
    for (const other of words.querySelectorAll("button")) other.classList.remove("chosen");
    button.classList.add("chosen");
    card.dataset.shown = caption;
  };
  const whole = el("button", "whole caption", "word");
  whole.type = "button";
  whole.addEventListener("click", () => show(result.whole,
    `caption · log p ${result.whole.logprob.toFixed(2)}`, whole));
  words.append(whole);
  result.words.forEach((word, position) => {
    const button = el("button", undefined, "word");
    button.type = "button";
    button.dataset.word = String(position);
    button.append(el("b", word.word), el("small", ` p ${word.probability.toFixed(2)}`));
    button.addEventListener("click", () => show(word,
      `word ${position + 1} “${word.word}” · p ${word.probability.toFixed(2)}`, button));
    words.append(button);
  });
  card.append(words, shown);
  if (result.notes.length) card.append(notesList(result.notes));
  output.append(card);
  whole.click();
}

// --- recordings ----------------------------------------------------------------------------

const LANE_COLORS = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd"];

function renderAudio(result) {
  const output = $("output");
  output.replaceChildren();
  const card = el("article", undefined, "card audio");
  const predicted = result.probabilities[result.predicted];
  card.append(el("h2", `${result.name}: ${result.predicted} (p = ${predicted.toFixed(3)})`));
  card.append(el("p", `${result.duration_s.toFixed(2)} s; relevance over time, each method ` +
    "summing to 1; click the picture to jump there", "hint"));
  const player = document.createElement("audio");
  player.id = "player";
  player.controls = true;
  player.src = state.inputs[0].url;
  const canvas = document.createElement("canvas");
  canvas.id = "timeline";
  canvas.width = 900;
  canvas.height = 110 + 60 * result.methods.length;
  card.append(player, canvas);
  drawTimeline(canvas, result, 0);
  let frame = null;
  const follow = () => {
    drawTimeline(canvas, result, player.currentTime);
    frame = player.paused ? null : requestAnimationFrame(follow);
  };
  player.addEventListener("play", () => { if (!frame) frame = requestAnimationFrame(follow); });
  player.addEventListener("timeupdate", () => drawTimeline(canvas, result, player.currentTime));
  player.addEventListener("seeked", () => drawTimeline(canvas, result, player.currentTime));
  canvas.addEventListener("click", (event) => {
    const box = canvas.getBoundingClientRect();
    player.currentTime = (event.clientX - box.left) / box.width * result.duration_s;
  });
  if (result.words.length) {
    const table = el("table", undefined, "words-table");
    const head = el("tr");
    for (const title of ["word", "from", "to", "time share", ...result.methods]) {
      head.append(el("th", title));
    }
    table.append(head);
    for (const word of result.words) {
      const line = el("tr");
      line.append(el("td", word.word), el("td", `${word.start_s.toFixed(2)} s`),
                  el("td", `${word.end_s.toFixed(2)} s`),
                  el("td", `${(100 * word.time_share).toFixed(1)}%`));
      for (const method of result.methods) line.append(el("td", `${(100 * word[method]).toFixed(1)}%`));
      line.addEventListener("click", () => { player.currentTime = word.start_s; player.play(); });
      table.append(line);
    }
    card.append(table);
  }
  if (result.notes.length) card.append(notesList(result.notes));
  output.append(card);
}

function drawTimeline(canvas, result, seconds) {
  const context = canvas.getContext("2d");
  const width = canvas.width;
  const waveHeight = 90;
  context.clearRect(0, 0, width, canvas.height);
  context.fillStyle = "#fafafa";
  context.fillRect(0, 0, width, canvas.height);
  // the waveform
  const envelope = result.envelope;
  const peak = Math.max(1e-6, ...envelope.map(([low, high]) => Math.max(-low, high)));
  context.fillStyle = "#555";
  envelope.forEach(([low, high], i) => {
    const x = i / envelope.length * width;
    const top = waveHeight / 2 - high / peak * (waveHeight / 2 - 4);
    const bottom = waveHeight / 2 - low / peak * (waveHeight / 2 - 4);
    context.fillRect(x, top, Math.max(1, width / envelope.length), Math.max(1, bottom - top));
  });
  // the words
  context.font = "12px sans-serif";
  for (const word of result.words) {
    const x0 = word.start_s / result.duration_s * width;
    const x1 = word.end_s / result.duration_s * width;
    context.fillStyle = "rgba(0, 0, 0, 0.06)";
    context.fillRect(x0, 0, x1 - x0, waveHeight);
    context.fillStyle = "#222";
    context.fillText(word.word, x0 + 2, 12);
  }
  // one lane of relevance per method, under the waveform
  const edges = result.frame_edges;
  result.methods.forEach((method, lane) => {
    const values = result.frame_relevance[method];
    const top = waveHeight + 10 + lane * 60;
    const most = Math.max(1e-12, ...values);
    context.fillStyle = LANE_COLORS[lane % LANE_COLORS.length];
    values.forEach((value, i) => {
      const x0 = edges[i] / result.duration_s * width;
      const x1 = edges[i + 1] / result.duration_s * width;
      const height = value / most * 50;
      context.fillRect(x0, top + 50 - height, Math.max(1, x1 - x0), height);
    });
    context.fillStyle = "#222";
    context.fillText(method, 4, top + 12);
  });
  // the cursor
  const x = Math.min(width - 1, seconds / result.duration_s * width);
  context.fillStyle = "#000";
  context.fillRect(x - 1, 0, 2, canvas.height);
  canvas.dataset.cursor = x.toFixed(1);
}

// --- bias audit ----------------------------------------------------------------------------

async function runAudit() {
  if (!state.model) return;
  const size = Math.max(1, Math.min(500, Number($("audit-size").value) || 100));
  const params = new URLSearchParams({model: state.model.name, size: String(size), worst: "8"});
  state.busy = true;
  document.body.dataset.busy = "true";
  setStatus(`auditing ${state.model.name} on ${size} biased digits…`);
  try {
    const result = await getJSON(`/api/audit?${params}`);
    state.result = result;
    renderAudit(result);
    $("downloads").hidden = false;
    setStatus(`audited ${result.size} inputs`);
  } catch (error) {
    setStatus(error.message, true);
  } finally {
    state.busy = false;
    delete document.body.dataset.busy;
  }
}

function percentText(value, digits = 1) {
  return value === null || value === undefined ? "–" : `${(100 * value).toFixed(digits)}%`;
}

function auditSummary(result) {
  const table = el("table", undefined, "grid audit-summary");
  const head = el("tr");
  for (const text of ["region", "mean share", "median share", "mean area", "lift"]) {
    head.append(el("th", text));
  }
  table.append(head);
  for (const region of result.regions) {
    const stats = result.overall.regions[region];
    const line = el("tr");
    line.append(el("th", region), el("td", percentText(stats.mean_share, 2)),
                el("td", percentText(stats.median_share, 2)),
                el("td", percentText(stats.mean_area, 2)),
                el("td", stats.lift === null ? "–" : `${stats.lift.toFixed(2)}×`));
    table.append(line);
  }
  return table;
}

function counterfactualTable(result) {
  const table = el("table", undefined, "grid");
  const head = el("tr");
  for (const text of ["data", "accuracy", "change", "follows the mark"]) head.append(el("th", text));
  table.append(head);
  for (const variant of result.counterfactual.variants) {
    const line = el("tr");
    line.append(el("th", variant.name), el("td", percentText(variant.accuracy)),
                el("td", variant.change === null ? "–" :
                  `${(100 * variant.change).toFixed(1)} points`),
                el("td", percentText(variant.cue_following)));
    table.append(line);
  }
  return table;
}

// The worst case shown large: its picture and its record.
function openCase(view, region, record) {
  view.replaceChildren();
  view.dataset.index = String(record.index);
  const picture = document.createElement("img");
  picture.src = record.picture;
  picture.alt = `input ${record.index}`;
  view.append(picture, el("p", `#${record.index}: label ${record.label}, predicted ` +
    `${record.prediction}${record.correct === false ? " (wrong)" : ""}; ${region} share ` +
    `${percentText(record.share[region], 2)}`));
  view.hidden = false;
}

function renderAudit(result) {
  const output = $("output");
  output.replaceChildren();
  const card = el("article", undefined, "card audit");
  card.append(el("h2", `Bias audit of ${result.model}`));
  card.append(el("p", result.description, "hint"));
  card.append(el("p", `${result.method} at ${result.layer}, map of the ${result.target} class; ` +
    `accuracy ${percentText(result.overall.accuracy)}. Rerun: ${result.command}`));
  card.append(auditSummary(result));
  if (result.counterfactual) card.append(counterfactualTable(result));
  const view = el("div", undefined, "case-view");
  view.id = "audit-case";
  view.hidden = true;
  const pictures = {};
  for (const region of result.regions) {
    for (const record of result.worst[region]) pictures[`${region}:${record.index}`] = record;
  }
  const controls = el("p");
  const sort = document.createElement("select");
  sort.id = "audit-sort";
  sort.setAttribute("aria-label", "sort by");
  for (const region of result.regions) {
    for (const [order, words] of [["desc", "largest first"], ["asc", "smallest first"]]) {
      const option = el("option", `${region} share, ${words}`);
      option.value = `${region}:${order}`;
      sort.append(option);
    }
  }
  controls.append(el("span", "sort the inputs by "), sort);
  const worst = el("div", undefined, "row worst");
  const table = el("table", undefined, "grid audit-records");
  const draw = () => {
    const [region, order] = sort.value.split(":");
    const sign = order === "asc" ? 1 : -1;
    const share = (r) => (r.share[region] === null ? -Infinity * sign : r.share[region]);
    const rows = [...result.records].sort((a, b) => sign * (share(a) - share(b)) ||
                                                    a.index - b.index);
    table.replaceChildren();
    const head = el("tr");
    for (const text of ["input", "label", "predicted", ...result.regions.map((r) => `${r} share`)]) {
      head.append(el("th", text));
    }
    table.append(head);
    for (const record of rows.slice(0, 50)) {
      const line = el("tr");
      line.dataset.index = String(record.index);
      line.append(el("td", `#${record.index}`), el("td", record.label),
                  el("td", record.prediction + (record.correct === false ? " ✗" : "")));
      for (const name of result.regions) line.append(el("td", percentText(record.share[name], 2)));
      const kept = pictures[`${region}:${record.index}`];
      if (kept) {
        line.classList.add("has-picture");
        line.title = "open this case";
        line.addEventListener("click", () => openCase(view, region, kept));
      }
      table.append(line);
    }
    worst.replaceChildren();
    for (const record of result.worst[region]) {
      const button = el("button", undefined, "case");
      button.type = "button";
      button.dataset.index = String(record.index);
      const thumb = document.createElement("img");
      thumb.src = record.picture;
      thumb.alt = `input ${record.index}`;
      button.append(thumb, el("span", `#${record.index} ${percentText(record.share[region])}`));
      button.addEventListener("click", () => openCase(view, region, record));
      worst.append(button);
    }
  };
  sort.addEventListener("change", draw);
  card.append(el("h3", "The worst cases (largest share first; click to open)"), worst, view,
              controls, table, el("p", "the first 50 inputs in this order; rows with a picture " +
                                  "open it", "hint"));
  draw();
  output.append(card);
  if (result.notes && result.notes.length) card.append(notesList(result.notes));
}

// --- the page ------------------------------------------------------------------------------

function setUp() {
  setUpDropZone();
  $("run").addEventListener("click", run);
  $("audit-run").addEventListener("click", runAudit);
  $("target-mode").addEventListener("change", () => {
    showTargetPickers();
    scheduleRun();
  });
  $("prompts").addEventListener("change", scheduleRun);
  $("class-search").addEventListener("input", () => {
    const wanted = $("class-search").value.trim().toLowerCase();
    for (const label of $("class-list").children) {
      label.hidden = wanted !== "" && !label.dataset.search.includes(wanted);
    }
  });
  $("opacity").addEventListener("input", () => {
    $("opacity-value").textContent = `${$("opacity").value}%`;
    for (const heat of document.querySelectorAll("img.heat:not(.overlay)")) {
      heat.style.opacity = opacity();
    }
  });
  $("download-json").addEventListener("click", () => {
    if (!state.result) return;
    const blob = new Blob([JSON.stringify(state.result, null, 1)], {type: "application/json"});
    saveBlob(blob, `camlens_${safeName(state.model.name)}.json`);
  });
  loadModels().catch((error) => setStatus(`cannot reach the server: ${error.message}`, true));
}

document.addEventListener("DOMContentLoaded", setUp);
