"""The preview's two HTML pages: the index of streams and one stream's live view."""

from __future__ import annotations

from html import escape

STYLE = ("body{font-family:sans-serif;margin:1em;background:#111;color:#eee}a{color:#8cf}"
         "img{max-width:100%;background:#000}#stats{font-family:monospace;margin:.5em 0}"
         "td{padding:0 1em 0 0}h1{font-size:1.3em;margin:0 0 .3em}p{margin:0 0 .8em}"
         ".live{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}")


def index_page(streams: list[tuple[str, str]]) -> str:
    """``streams``: (id, label) of each stream."""
    items = "".join(f'<li><a href="/stream/{escape(sid)}">stream {escape(sid)}</a>: {escape(label)}</li>'
                    for sid, label in streams)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>segstream preview</title>"
            f"<style>{STYLE}</style></head><body><h1>segstream preview</h1><ul>{items}</ul></body></html>")


STREAM_SCRIPT = """
const base = "/stream/" + encodeURIComponent(document.body.dataset.stream);
const img = document.getElementById("view");
img.onerror = () => setTimeout(() => { img.src = base + "/mjpeg?t=" + Date.now(); }, 1000);
const fields = ["status", "fps", "latency_p50_ms", "frames", "dropped", "instances"];
async function poll() {
  try {
    const stats = await (await fetch(base + "/stats.json", {cache: "no-store"})).json();
    for (const f of fields) {
      const v = stats[f];
      document.getElementById(f).textContent = v === null || v === undefined ? "-" : v;
    }
  } catch (e) {
    document.getElementById("status").textContent = "preview unreachable";
  }
}
poll();
setInterval(poll, 1000);
"""


def stream_page(sid: str, label: str) -> str:
    rows = "".join(f"<tr><td>{name}</td><td id='{key}'>-</td></tr>" for key, name in (
        ("status", "status"), ("fps", "fps"), ("latency_p50_ms", "latency p50 (ms)"), ("frames", "frames"),
        ("dropped", "dropped"), ("instances", "instances (last frame)")))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>segstream: stream {escape(sid)}</title>"
            f"<style>{STYLE}</style></head><body data-stream='{escape(sid)}'>"
            f"<h1>stream {escape(sid)}</h1><p><a href='/'>all streams</a> | {escape(label)}</p>"
            f"<div class='live'><img id='view' alt='live overlay' src='/stream/{escape(sid)}/mjpeg'>"
            f"<table id='stats'>{rows}</table></div><script>{STREAM_SCRIPT}</script></body></html>")
