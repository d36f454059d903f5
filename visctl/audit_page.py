"""``report.html`` of ``visctl audit``: the summary, the per-class table, the worst images (and what moved).

One self-contained page (:func:`visctl.gallery.page`): the data travel as JSON in the page's script
(:func:`visctl.gallery._script_json`) and the tables are built with DOM calls, every name set as
``textContent``, never parsed as HTML; thumbnails are relative links this run wrote (percent-encoded). Tables
sort by a click on a column's header and filter by class, in the browser, without a server.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from visctl.gallery import _script_json, _text, page

_STYLE = """table{border-collapse:collapse;margin:.5rem 0 1.5rem;background:#fff;font-size:.85rem}
th,td{border:1px solid #ddd;padding:.25rem .45rem;text-align:right}
th{cursor:pointer;background:#f0f0f0;user-select:none} th.sorted-asc::after{content:' \\25B2'}
th.sorted-desc::after{content:' \\25BC'} td.t{text-align:left;max-width:22rem;overflow-wrap:anywhere}
td img{display:block;max-width:320px} .bad{color:#a00;font-weight:600} .ok{color:#060}
.summary span{display:inline-block;margin-right:1.2rem} select{margin:.3rem 0 .3rem .4rem}
.fail{color:#a00;font-weight:600}"""

# rows of a table: T[name] = {cols: [[key, label, kind]], rows: [{...}]}; kind: text, num, img, bool
_SCRIPT = """function fmt(v,kind){if(v===null||v===undefined){return '';}
if(kind==='num'){return (typeof v==='number')?(Math.round(v*1000)/1000).toString():String(v);}
if(kind==='bool'){return v?'yes':'no';}return String(v);}
function draw(name){var t=T[name],body=document.querySelector('#'+name+' tbody');
var want=document.getElementById('cls').value;body.replaceChildren();
t.rows.forEach(function(r){if(want!==''&&r['class']!==want){return;}
var tr=document.createElement('tr');tr.dataset.cls=r['class'];
t.cols.forEach(function(c){var td=document.createElement('td');var v=r[c[0]];
if(c[2]==='img'){if(v){var a=document.createElement('a');a.href=v;var im=document.createElement('img');
im.src=v;im.alt=r.name||'';a.appendChild(im);td.appendChild(a);}}
else{td.textContent=fmt(v,c[2]);if(c[2]==='text'){td.className='t';}
if(c[2]==='bool'&&c[0]==='right_for_wrong_reason'&&v){td.className='bad';}}
tr.appendChild(td);});body.appendChild(tr);});}
function sortBy(name,i){var t=T[name],c=t.cols[i],dir=(t.key===i&&t.dir===1)?-1:1;t.key=i;t.dir=dir;
t.rows.sort(function(a,b){var x=a[c[0]],y=b[c[0]];
if(x===y){return a._i-b._i;}if(x===null||x===undefined){return 1;}if(y===null||y===undefined){return -1;}
if(typeof x==='boolean'){x=+x;y=+y;}return (x<y?-1:1)*dir;});
document.querySelectorAll('#'+name+' th').forEach(function(th,j){
th.className=j===i?(dir===1?'sorted-asc':'sorted-desc'):'';});draw(name);}
function build(name){var t=T[name],table=document.getElementById(name);if(!table){return;}
t.rows.forEach(function(r,i){r._i=i;});
var tr=document.createElement('tr');t.cols.forEach(function(c,i){var th=document.createElement('th');
th.textContent=c[1];th.addEventListener('click',function(){sortBy(name,i);});tr.appendChild(th);});
table.createTHead().appendChild(tr);table.appendChild(document.createElement('tbody'));draw(name);}
function all(){Object.keys(T).forEach(function(n){if(document.getElementById(n)){draw(n);}});}
var sel=document.getElementById('cls');C.forEach(function(c){var o=document.createElement('option');
o.value=c;o.textContent=c;sel.appendChild(o);});sel.addEventListener('change',all);
Object.keys(T).forEach(build);"""

_MEASURE_COLS = [["pointing", "pointing", "num"], ["energy", "energy", "num"], ["iou", "IoU", "num"],
                 ["border", "border", "num"], ["entropy", "entropy", "num"]]


def _href(name: str) -> str:
    """A relative link to a file this run wrote: percent-encoded, so it can be no URL scheme."""
    return quote(name)


def render(summary: dict[str, Any], worst: list[dict[str, Any]], moved: list[dict[str, Any]],
           params: dict[str, Any]) -> str:
    """The page: ``summary`` (the manifest's ``audit``), the worst rows (each with its ``thumb`` file name) and,
    with a compared checkpoint, the rows that moved the most."""
    overall = summary.get("overall", {})
    has_object = "pointing" in overall
    measure_cols = [c for c in _MEASURE_COLS if c[0] in overall or not has_object and c[0] in ("border", "entropy")]
    agreement = [c for c in (["spearman", "spearman", "num"], ["agreement_iou", "agreement IoU", "num"])
                 if c[0] in overall]
    tables: dict[str, Any] = {}
    tables["classes"] = dict(
        cols=[["class", "class", "text"], ["n", "images", "num"], ["accuracy", "accuracy", "num"], *measure_cols,
              *agreement, *([["right_reason", "right reason", "num"],
                             ["right_for_wrong_reason", "right for the wrong reason", "num"]] if has_object else [])],
        rows=[{k: v for k, v in c.items()} for c in summary.get("per_class", [])])
    tables["worst"] = dict(
        cols=[["thumb", "map (green: object, ring: peak)", "img"], ["name", "image", "text"], ["class", "class", "text"],
              ["predicted_class", "predicted", "text"], ["correct", "correct", "bool"], ["p_true", "p(class)", "num"],
              *measure_cols, *agreement,
              *([["right_for_wrong_reason", "right for the wrong reason", "bool"]] if has_object else [])],
        rows=[dict({k: r.get(k) for k in ("class", "predicted_class", "correct", "p_true", "pointing", "energy", "iou",
                                          "border", "entropy", "spearman", "agreement_iou", "right_for_wrong_reason")},
                   name=str(r["path"]), thumb=_href(r["thumb"])) for r in worst])
    compare = summary.get("compare")
    if compare:
        per = []
        for c in compare.get("per_class", []):
            row: dict[str, Any] = {"class": c["class"]}
            for m in ("accuracy", "pointing", "energy", "border"):
                if isinstance(c.get(m), dict):
                    row[m + "_a"], row[m + "_b"], row[m + "_d"] = c[m]["a"], c[m]["b"], c[m]["delta"]
            per.append(row)
        cols: list[list[str]] = [["class", "class", "text"]]
        for m in ("accuracy", "pointing", "energy", "border"):
            if any(m + "_d" in r for r in per):
                cols += [[m + "_a", f"{m} before", "num"], [m + "_b", f"{m} after", "num"], [m + "_d", f"{m} change", "num"]]
        tables["compare"] = dict(cols=cols, rows=per)
        tables["moved"] = dict(
            cols=[["thumb", "before | after", "img"], ["name", "image", "text"], ["class", "class", "text"],
                  ["predicted_a", "predicted before", "text"], ["predicted_b", "predicted after", "text"],
                  *([["pointing_delta", "pointing change", "num"], ["energy_delta", "energy change", "num"]]
                    if has_object else []), ["border_delta", "border change", "num"]],
            rows=[dict({k: r.get(k) for k in ("class", "predicted_a", "predicted_b", "pointing_delta", "energy_delta",
                                              "border_delta")}, name=str(r["path"]), thumb=_href(r["thumb"]))
                  for r in moved])
    root = str(summary.get("data_root") or "")
    for table in ("worst", "moved"):  # paths under the data's root shown from there (audit.csv has them whole)
        for r in tables.get(table, {}).get("rows", []):
            if root and r["name"].startswith(root.rstrip("/") + "/"):
                r["name"] = r["name"][len(root.rstrip("/")) + 1:]
    classes = sorted({str(c["class"]) for c in summary.get("per_class", [])})
    esc = _text
    head = [f'<span><b>images</b> {esc(summary.get("images", 0))}</span>']
    head += [f'<span><b>{esc(k.replace("_", " "))}</b> {esc(_num(overall[k]))}</span>'
             for k in ("accuracy", "pointing", "energy", "iou", "border", "entropy", "spearman", "agreement_iou",
                       "right_reason", "right_for_wrong_reason") if overall.get(k) is not None]
    failed = summary.get("failed") or []
    thresholds = summary.get("thresholds") or {}
    verdict = ""
    if thresholds:
        verdict = (f'<p class="fail">failed: {esc("; ".join(failed))}</p>' if failed
                   else f'<p class="ok">passed: {esc(", ".join(f"{k} >= {v:g}" for k, v in thresholds.items()))}</p>')
    where = ", ".join(f"{k}={v}" for k, v in params.items() if k in ("config", "checkpoint", "data", "method",
                                                                      "annotations", "compare") and v)
    body = [
        "<h1>visctl audit</h1>",
        f'<p class="meta"><code>{esc(where)}</code></p>',
        f'<p class="summary">{"".join(head)}</p>', verdict,
        '<label>class <select id="cls"><option value="">all</option></select></label>',
        "<h2>Per class</h2>", '<table id="classes"></table>',
        f"<h2>Worst images first <small>({len(worst)} kept; every image is in audit.csv)</small></h2>",
        '<table id="worst"></table>']
    if compare:
        body += [f"<h2>What moved <small>from {esc(params.get('checkpoint'))} to {esc(compare.get('checkpoint'))}"
                 "</small></h2>", '<table id="compare"></table>',
                 f"<h3>Images that moved the most <small>({len(moved)}; every image is in audit_compare.csv)</small></h3>",
                 '<table id="moved"></table>']
    script = f"var T={_script_json(tables)};var C={_script_json(classes)};" + _SCRIPT
    return page("visctl audit", "\n".join(body), _STYLE, script)


def _num(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return "" if v is None else str(v)
