"""The one page of the web view: a tile per stream with its live picture, state, FPS,
drops / reconnects and newest detections, refreshed from /api/status once a second. Static
text: no request ever reads a file. The token the page was opened with is passed on to its own
requests and taken out of the address bar and history; a reload gets in with the session cookie
the server set when the token came (http.py).

Each picture is fetched as a JPEG when the one before it has loaded (at most the view's rate,
and only a newer one: 204 while there is none), not as an endless MJPEG response: a browser
opens 6 connections per server, which 6 MJPEG tiles would hold for good, leaving none for a 7th
stream or the status; and a request that fails is simply made again."""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>dbrt live</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px system-ui,sans-serif;margin:0;background:#111;color:#ddd}
header{padding:8px 12px;background:#222;display:flex;gap:24px;flex-wrap:wrap}
#tiles{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:10px;padding:10px}
.tile{background:#1b1b1b;border:2px solid #2a2a2a;border-radius:6px;overflow:hidden}
.tile.down{border-color:#c33}.tile.reconnecting,.tile.connecting{border-color:#d90}
.tile img{width:100%;display:block;background:#000;min-height:120px}
.info{padding:6px 10px;font-size:13px;line-height:1.5}
.state{font-weight:bold}.up{color:#5c5}.bad{color:#f66}.warn{color:#fb3}
.texts{color:#9cf;word-break:break-all}
table{border-collapse:collapse;font-size:12px}td{padding:0 10px 0 0}
</style></head><body>
<header><b>dbrt live</b><span id="summary">connecting...</span><span id="stages"></span>
<span id="outputs"></span></header>
<div id="tiles"></div>
<script>
// the token as typed: URLSearchParams would turn a "+" in it into a space (and a "%" that
// starts no escape stays itself, as the server reads it)
const given = /[?&]token=([^&]*)/.exec(location.search);
function decoded(t){ try { return decodeURIComponent(t); } catch (e) { return t; } }
const token = given ? decoded(given[1]) : null;
const q = token ? "?token=" + encodeURIComponent(token) : "";
// out of the address bar and the history once read: the page's own requests carry it (q)
if (given) history.replaceState(null, "", location.pathname +
  location.search.replace(/([?&])token=[^&]*&?/, "$1").replace(/[?&]$/, "") + location.hash);
const FRAME_MS = __FRAME_MS__;
const tiles = {};
function esc(s){return String(s).replace(/[&<>"']/g,c=>"&#"+c.charCodeAt(0)+";");}
const sleep = (ms) => new Promise(done => setTimeout(done, ms));
async function show(img, id){
  // the next picture once the last one is in, and only a newer one: the server answers 204
  // (no bytes) while the stream shows nothing new, so a stalled stream costs next to nothing
  let seq = -1;
  for (;;){
    const asked = Date.now();
    let wait = FRAME_MS;
    try {
      const r = await fetch("stream/" + id + ".jpg" + q + (q ? "&" : "?") + "after=" + seq,
                            {cache: "no-store"});
      if (r.status === 200){
        seq = +r.headers.get("X-Frame-Seq");
        const url = URL.createObjectURL(await r.blob());
        await new Promise(done => { img.onload = img.onerror = done; img.src = url; });
        if (img.dataset.url) URL.revokeObjectURL(img.dataset.url);
        img.dataset.url = url;
        img.dataset.shown = +(img.dataset.shown || 0) + 1;
      } else if (r.status !== 204) wait = 1000;
    } catch (e) { wait = 1000; }
    await sleep(Math.max(0, wait - (Date.now() - asked)));
  }
}
function tile(s){
  if (tiles[s.id]) return tiles[s.id];
  const div = document.createElement("div");
  div.className = "tile";
  div.innerHTML = '<img alt="stream ' + s.id + '"><div class="info"></div>';
  document.getElementById("tiles").appendChild(div);
  show(div.querySelector("img"), s.id);
  return tiles[s.id] = div;
}
function render(st){
  document.getElementById("summary").textContent =
    st.frames + " frames | " + st.current_fps.toFixed(1) + " FPS | " + st.elapsed_s.toFixed(0) + " s";
  document.getElementById("stages").textContent = Object.entries(st.stages)
    .filter(([n, s]) => s.count).map(([n, s]) => n + " " + s.p50_ms.toFixed(1) + " ms").join(" | ");
  document.getElementById("outputs").textContent = Object.entries(st.outputs)
    .map(([n, o]) => n + ": " + Object.entries(o).map(([k, v]) => k + " " + v).join(", ")).join(" | ");
  for (const s of st.streams){
    const div = tile(s);
    const waits = s.state === "reconnecting" || s.state === "connecting";
    const cls = s.state === "up" ? "up" : (waits ? "warn" : "bad");
    div.className = "tile " + (s.state === "up" ? "" : (waits ? s.state : "down"));
    const note = s.state === "up" ? "" : " (" + esc(s.events.slice(-1)[0] || "no frames") + ")";
    const texts = s.texts.filter(t => t !== "");  // "": read, nothing legible
    div.querySelector(".info").innerHTML =
      "<b>" + s.id + "</b> " + esc(s.name) + " <span class='state " + cls + "'>" + esc(s.state) +
      "</span>" + note + "<br>frames " + s.frames + " | dropped " + s.dropped +
      (s.sampled_out ? " | sampled out " + s.sampled_out : "") +
      (s.skipped ? " | skipped " + s.skipped : "") + " | reconnects " +
      s.reconnects + " | detections " + s.detection_count +
      (texts.length ? "<div class='texts'>" + texts.map(esc).join(" &middot; ") + "</div>" : "");
  }
}
async function poll(){
  try {
    const r = await fetch("api/status" + q, {cache: "no-store"});
    if (r.ok) render(await r.json());
    else document.getElementById("summary").textContent = "status: HTTP " + r.status;
  } catch (e) {
    document.getElementById("summary").textContent = "the run has ended or is unreachable";
  }
  setTimeout(poll, 1000);
}
poll();
</script></body></html>
"""


def page(frame_ms: int) -> bytes:
    """The page, fetching each stream's picture at most every `frame_ms` milliseconds."""
    return PAGE.replace("__FRAME_MS__", str(int(frame_ms))).encode()
