"""The audit report as ONE self-contained HTML file: inline CSS, inline SVG charts, a few lines of
inline JavaScript for filtering. No external asset, font, script or image is referenced, so the
file can be mailed, archived or opened offline. Every value from the store is HTML-escaped
(artifact names and reasons come from untrusted stores)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from html import escape
from typing import TYPE_CHECKING, Any

from .audit import PASSING_STATUSES, STATUS_DESCRIPTIONS, Status

if TYPE_CHECKING:
    from .audit import AuditReport

__all__ = ["STATUS_COLORS", "render_html", "script_json"]

STATUS_COLORS: dict[str, str] = {
    "valid": "#1a7f37",
    "adopted": "#0969da",
    "signature-ok": "#4d8a5b",
    "superseded": "#57606a",
    "tampered": "#cf222e",
    "unsigned": "#bc4c00",
    "unknown-key": "#8250df",
    "revoked-key": "#a40e26",
    "expired-key": "#9a6700",
    "context-mismatch": "#bf3989",
    "rolled-back": "#e16f24",
    "replayed": "#d1242f",
    "forked": "#953800",
    "legacy-format": "#7d4e00",
    "missing-from-ledger": "#57606a",
    "error": "#24292f",
}

_CSS = """
*{box-sizing:border-box}
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;color:#1f2328;
background:#f6f8fa;font-size:14px}
header{background:#24292f;color:#fff;padding:18px 28px}
header h1{margin:0 0 4px;font-size:20px}
header .meta{color:#c9d1d9;font-size:12px}
main{padding:20px 28px}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin-bottom:18px}
.card{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:10px 14px;min-width:120px;
border-left:6px solid #999}
.card .n{font-size:22px;font-weight:600}
.card .l{font-size:12px;color:#57606a}
.verdict{font-size:16px;font-weight:600;margin:0 0 14px;padding:10px 14px;border-radius:6px}
.verdict.ok{background:#dafbe1;color:#1a7f37}.verdict.bad{background:#ffebe9;color:#cf222e}
.charts{display:flex;flex-wrap:wrap;gap:18px;margin-bottom:18px}
.panel{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:12px 16px;flex:1 1 440px}
.panel h2{font-size:15px;margin:0 0 8px}
.filters{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:10px 14px;
margin-bottom:10px;display:flex;flex-wrap:wrap;gap:8px;align-items:center}
.filters label{display:inline-flex;align-items:center;gap:4px;padding:3px 8px;border-radius:12px;
background:#f6f8fa;border:1px solid #d0d7de;cursor:pointer;font-size:12px}
.filters input[type=search]{padding:5px 8px;border:1px solid #d0d7de;border-radius:6px;
min-width:220px}
.filters button{padding:4px 10px;border:1px solid #d0d7de;border-radius:6px;background:#f6f8fa;
cursor:pointer}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #d0d7de;font-size:12px}
th,td{padding:5px 8px;border-bottom:1px solid #eaeef2;text-align:left;vertical-align:top}
th{background:#f6f8fa;position:sticky;top:0}
td.nowrap{white-space:nowrap}
td.mono{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:11px}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;color:#fff;font-size:11px;
white-space:nowrap}
.reason{color:#57606a;max-width:420px}
.dot{display:inline-block;width:10px;height:10px;border-radius:50%}
#count{color:#57606a;margin-left:auto;font-size:12px}
footer{color:#57606a;font-size:11px;padding:10px 28px 24px}
"""

# Inside <script>, "</script", "<!--" and "<script" change how the HTML parser reads the element
# (a key id "<!--<script>" made the JSON block swallow the rest of the page, filter script
# included); U+2028/2029 end a JavaScript line. None of them survives as itself.
_SCRIPT_JSON_ESCAPES = {
    ord("<"): "\\u003c",
    ord(">"): "\\u003e",
    ord("&"): "\\u0026",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}


def script_json(value: object) -> str:
    """``value`` as JSON that can sit inside any HTML ``<script>`` element: ``<``, ``>``, ``&``
    and U+2028/2029 are written as ``\\uXXXX`` escapes (the same JSON value, nothing the HTML
    parser or a JavaScript engine can read as markup or a line end)."""
    return json.dumps(value, sort_keys=True).translate(_SCRIPT_JSON_ESCAPES)


_CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'"

_JS = """
(function(){
  var boxes=document.querySelectorAll('input[data-status]');
  var search=document.getElementById('q');
  var rows=document.querySelectorAll('#versions tbody tr');
  var count=document.getElementById('count');
  function apply(){
    var on={};boxes.forEach(function(b){on[b.getAttribute('data-status')]=b.checked;});
    var q=(search.value||'').toLowerCase();var shown=0;
    rows.forEach(function(r){
      var ok=on[r.getAttribute('data-status')]&&(!q||r.textContent.toLowerCase().indexOf(q)>=0);
      r.style.display=ok?'':'none';if(ok){shown++;}
    });
    count.textContent=shown+' of '+rows.length+' versions shown';
  }
  boxes.forEach(function(b){b.addEventListener('change',apply);});
  search.addEventListener('input',apply);
  document.getElementById('all').addEventListener('click',function(){
    boxes.forEach(function(b){b.checked=true;});apply();});
  document.getElementById('problems').addEventListener('click',function(){
    boxes.forEach(function(b){var s=b.getAttribute('data-status');
      b.checked=(s!=='valid'&&s!=='adopted');});apply();});
  var h=(location.hash||'').replace('#status=','');
  if(h){boxes.forEach(function(b){b.checked=(b.getAttribute('data-status')===h);});}
  apply();
})();
"""


def _color(status: str) -> str:
    return STATUS_COLORS.get(status, "#6e7781")


def _status_chart(by_status: dict[str, int]) -> str:
    items = [(s, n) for s, n in by_status.items() if n]
    if not items:
        return "<p>No artifact versions.</p>"
    width, bar_h, gap, label_w = 560, 20, 6, 150
    top = max(n for _, n in items)
    height = len(items) * (bar_h + gap) + gap
    parts = [
        f'<svg role="img" aria-label="versions by status" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
    ]
    span = width - label_w - 60
    for i, (status, n) in enumerate(items):
        y = gap + i * (bar_h + gap)
        w = max(2, round(span * n / top))
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 14}" text-anchor="end" font-size="12" '
            f'fill="#1f2328">{escape(status)}</text>'
            f'<rect x="{label_w}" y="{y}" width="{w}" height="{bar_h}" rx="3" '
            f'fill="{_color(status)}"><title>{escape(status)}: {n}</title></rect>'
            f'<text x="{label_w + w + 6}" y="{y + 14}" font-size="12" fill="#1f2328">{n}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _key_chart(by_key: dict[str, dict[str, int]]) -> str:
    if not by_key:
        return "<p>No artifact versions.</p>"
    width, bar_h, gap, label_w = 560, 20, 6, 150
    keys = sorted(by_key, key=lambda k: -sum(by_key[k].values()))[:25]
    top = max(sum(by_key[k].values()) for k in keys)
    height = len(keys) * (bar_h + gap) + gap
    span = width - label_w - 60
    parts = [
        f'<svg role="img" aria-label="versions by key and status" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for i, kid in enumerate(keys):
        y = gap + i * (bar_h + gap)
        x = float(label_w)
        label = kid if len(kid) <= 20 else kid[:19] + "\u2026"
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 14}" text-anchor="end" font-size="12" '
            f'font-family="monospace" fill="#1f2328">{escape(label)}</text>'
        )
        total = 0
        for status in STATUS_COLORS:
            n = by_key[kid].get(status, 0)
            if not n:
                continue
            w = max(2.0, span * n / top)
            parts.append(
                f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar_h}" '
                f'fill="{_color(status)}"><title>{escape(kid)} {escape(status)}: {n}</title></rect>'
            )
            x += w
            total += n
        parts.append(
            f'<text x="{x + 6:.1f}" y="{y + 14}" font-size="12" fill="#1f2328">{total}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _legend(statuses: list[str]) -> str:
    return " ".join(
        f'<span style="margin-right:10px"><span class="dot" style="background:{_color(s)}">'
        f"</span> {escape(s)}</span>"
        for s in statuses
    )


def _link_rows(links: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for row in links:
        status = str(row.get("status", ""))
        rows.append(
            f'<tr data-status="{escape(status)}">'
            f'<td><span class="badge" style="background:{_color(status)}">{escape(status)}'
            "</span></td>"
            f"<td>{escape(str(row.get('registry', '')))}</td>"
            f"<td>{escape(', '.join(str(a) for a in row.get('aliases') or ()))}</td>"
            f"<td>{escape(str(row.get('source') or ''))}</td>"
            f'<td class="mono">{escape(str(row.get("key_id") or ""))}</td>'
            f'<td class="reason">{escape(str(row.get("reason") or ""))}</td>'
            "</tr>"
        )
    return "".join(rows)


def render_html(
    report: AuditReport,
    *,
    title: str = "Signature audit",
    links: Sequence[Mapping[str, Any]] = (),
) -> str:
    """Render ``report`` as one self-contained HTML document (a str); ``links`` are the
    registry link statements' rows (``audit.audit_links``), listed in their own table."""

    by_status = report.counts_by_status
    by_key = report.counts_by_key
    total = len(report.entries)
    bad = sum(n for s, n in by_status.items() if Status(s) not in PASSING_STATUSES)
    bad_links = sum(1 for row in links if row.get("status") != Status.VALID.value)
    present = [s for s, n in by_status.items() if n]
    cards = [
        f'<div class="card" style="border-left-color:#24292f"><div class="n">{total}</div>'
        '<div class="l">versions audited</div></div>'
    ]
    for status, n in by_status.items():
        if n:
            desc = STATUS_DESCRIPTIONS[Status(status)]
            cards.append(
                f'<div class="card" style="border-left-color:{_color(status)}" '
                f'title="{escape(desc)}"><div class="n">{n}</div>'
                f'<div class="l">{escape(status)}</div></div>'
            )
    verdict = (
        f'<p class="verdict ok">All {total} versions are signed by trusted keys.</p>'
        if bad == 0
        else f'<p class="verdict bad">{bad} of {total} versions need attention.</p>'
    )
    if bad_links:
        verdict += (
            f'<p class="verdict bad">{bad_links} of {len(links)} registry link statements '
            "need attention.</p>"
        )
    filters = "".join(
        f'<label><input type="checkbox" data-status="{escape(s)}" checked>'
        f'<span class="dot" style="background:{_color(s)}"></span>{escape(s)} '
        f"({by_status[s]})</label>"
        for s in present
    )
    rows = []
    for e in report.entries:
        status = e.status.value
        origin = (
            f" ({escape(e.origin)})" if e.origin and e.origin not in ("signed", status) else ""
        )
        rows.append(
            f'<tr data-status="{escape(status)}">'
            f'<td><span class="badge" style="background:{_color(status)}">{escape(status)}'
            f"</span>{origin}</td>"
            f"<td>{escape(e.entity)}/{escape(e.project)}/<b>{escape(e.name)}</b></td>"
            f"<td>{escape(e.version)}</td>"
            f"<td>{escape(', '.join(e.aliases))}</td>"
            f"<td>{escape(e.type)}</td>"
            f"<td>{escape(e.serializer or '')}</td>"
            f'<td class="mono">{escape(e.key_id or "")}</td>'
            f"<td>{escape(e.alg or '')}</td>"
            f'<td class="mono nowrap">{escape(e.signed_at or "")}</td>'
            f'<td class="mono" title="{escape(e.digest or "")}">'
            f"{escape((e.digest or '')[:16])}</td>"
            f'<td class="reason">{escape(e.reason or "")}</td>'
            "</tr>"
        )
    keys_rows = "".join(
        f'<tr><td class="mono">{escape(str(k.get("kid")))}</td><td>{escape(str(k.get("alg")))}'
        f"</td><td>{escape(str(k.get('status')))}</td>"
        f"<td>{escape(str(k.get('not_after') or '-'))}</td>"
        f"<td>{escape(str(k.get('origin')))}</td></tr>"
        for k in report.keys
    )
    summary_json = script_json({"total": total, "by_status": by_status, "by_key": by_key})
    mode = (
        "deep (every payload re-hashed)"
        if report.deep
        else "fast (signatures and sizes only; payloads were NOT re-hashed)"
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<title>{escape(title)}</title><style>{_CSS}</style></head>
<body>
<header><h1>{escape(title)}</h1>
<div class="meta">generated {escape(report.generated_at)} &middot; store {escape(report.store)}
&middot; key store {escape(report.key_store)} &middot; mode {escape(mode)}
&middot; {report.elapsed_s:.2f} s</div></header>
<main>
<section id="summary">{verdict}<div class="cards">{"".join(cards)}</div></section>
<section class="charts">
<div class="panel"><h2>Versions by status</h2>{_status_chart(by_status)}</div>
<div class="panel"><h2>Versions by signing key</h2>{_key_chart(by_key)}
<div style="font-size:11px;margin-top:6px">{_legend(present)}</div></div>
</section>
<div class="filters"><b>Show:</b>{filters}
<button id="all" type="button">all</button>
<button id="problems" type="button">problems only</button>
<input id="q" type="search" placeholder="filter by name, key, reason...">
<span id="count"></span></div>
<table id="versions"><thead><tr><th>status</th><th>artifact</th><th>version</th><th>aliases</th>
<th>type</th><th>serializer</th><th>key id</th><th>alg</th><th>signed at</th><th>digest</th>
<th>reason</th></tr></thead><tbody>
{"".join(rows)}
</tbody></table>
<div class="panel" style="margin-top:18px"><h2>Registry link statements</h2>
<table id="links"><thead><tr><th>status</th><th>registry version</th><th>aliases</th>
<th>linked artifact</th><th>key id</th><th>reason</th></tr></thead>
<tbody>{_link_rows(links) or '<tr><td colspan="6">none in this store</td></tr>'}</tbody></table></div>
<div class="panel" style="margin-top:18px"><h2>Keys in the key store</h2>
<table><thead><tr><th>key id</th><th>alg</th><th>status</th><th>not after</th><th>origin</th></tr>
</thead><tbody>{keys_rows}</tbody></table></div>
</main>
<footer>dagster-wandb-secure audit report. Nothing was deserialized to produce it.</footer>
<script type="application/json" id="summary-data">{summary_json}</script>
<script>{_JS}</script>
</body></html>
"""
