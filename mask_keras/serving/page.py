"""The service's page at ``GET /``: drop or pick a photo, see the crop (green) and face (orange)
drawn on it and the answers (plain HTML and JavaScript, no build step)."""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mask_keras</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body{font-family:system-ui,sans-serif;max-width:760px;margin:2em auto;padding:0 1em;color:#222}
 #drop{border:2px dashed #888;border-radius:8px;padding:2em;text-align:center;cursor:pointer}
 #drop.over{background:#eef}
 canvas{max-width:100%;margin-top:1em}
 table{border-collapse:collapse;margin-top:1em} td,th{padding:.2em .8em;text-align:left}
 .bar{background:#4a7;height:.8em;display:inline-block}
 #error{color:#b00}
</style></head><body>
<h1>Mask, gender and age</h1>
<div id="drop">Drop a photo here, or <label><u>pick one</u>
 <input id="file" type="file" accept="image/*" hidden></label></div>
<p id="error"></p>
<canvas id="canvas" width="0" height="0"></canvas>
<div id="answers"></div>
<script>
const drop = document.getElementById("drop"), input = document.getElementById("file");
const canvas = document.getElementById("canvas"), answers = document.getElementById("answers");
const errorBox = document.getElementById("error");
drop.addEventListener("dragover", e => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", e => { e.preventDefault(); drop.classList.remove("over");
  if (e.dataTransfer.files.length) send(e.dataTransfer.files[0]); });
input.addEventListener("change", () => { if (input.files.length) send(input.files[0]); });
async function send(file) {
  errorBox.textContent = ""; answers.innerHTML = "";
  const body = new FormData(); body.append("image", file);
  const res = await fetch("/predict", {method: "POST", body});
  const data = await res.json();
  if (!res.ok) { errorBox.textContent = data.error; return; }
  const p = data.predictions[0];
  const img = new Image();
  img.onload = () => {
    canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
    const ctx = canvas.getContext("2d"); ctx.drawImage(img, 0, 0);
    ctx.lineWidth = Math.max(2, img.naturalWidth / 150);
    for (const [box, color] of [[p.crop_box, "#0c0"], [p.face_box, "#c60"]]) {
      if (!box) continue;
      const [y0, x0, y1, x1] = box;
      ctx.strokeStyle = color; ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
    }
  };
  img.src = URL.createObjectURL(file);
  let html = "";
  if (p.face_found === false) html += `<p id="noface">No face found: the centre of the photo was answered.</p>`;
  if (p.error) { errorBox.textContent = p.error; return; }
  html += "<table><tr><th>task</th><th>answer</th><th>probabilities</th></tr>";
  for (const task of ["mask", "gender", "age"]) {
    if (p[task] === null || p[task] === undefined) continue;
    const probs = Object.keys(p).filter(k => k.startsWith("p_" + task + "_"))
      .map(k => `${k.slice(task.length + 3)} <span class="bar" style="width:${Math.round(p[k] * 120)}px"></span>
                 ${(100 * p[k]).toFixed(1)}%`).join("<br>");
    html += `<tr><td>${task}</td><td class="answer" data-task="${task}"><b>${p[task]}</b></td><td>${probs}</td></tr>`;
  }
  answers.innerHTML = html + "</table>" + (p["class"] === null ? "" : `<p>class ${p["class"]}</p>`)
    + (data.predictions.length > 1 ? `<p>${data.predictions.length} faces; the largest is shown</p>` : "");
}
</script></body></html>
"""
