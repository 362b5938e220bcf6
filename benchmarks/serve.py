"""Latency of the explorer (sparsecbm serve) over real HTTP on loopback.

On the pipeline SparseCBM and the first --browse-n CEBaB dev rows: p50/p95 of
``/api/explain`` (grad, every concept) and of ``/api/preview`` (a correction
of a wrong concept, taylor auto, no guard), each alone (one client) and under
load (8 clients sending a mix of both). Targets (issue 11): explain p95 < 300
ms alone, preview p95 < 1 s alone. Then Keep and Undo as a user waits for them
in the browser (Playwright driving Debian's Chromium; --keeps of each): from the
click to the page showing the edited pathway, history and rows (issue 38: under
1 s on a 500-row browse split). With --screenshots DIR, also saves the
pictures of the page in docs/explorer.md (Playwright driving Debian's
Chromium), each showing one behaviour, on a copy of the model folder.

    python -m benchmarks.serve [--model DIR] [--browse-n 500] [--screenshots docs]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import socket
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import uvicorn

import sparsecbm
from benchmarks.harness import machine, write_results
from sparsecbm.data import dataset_from_spec
from sparsecbm.explorer import Explorer, create_app


def percentiles(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    return {"n": len(xs), "p50_ms": 1000 * statistics.median(xs), "p95_ms": 1000 * float(np.percentile(xs, 95))}


def timed(http: httpx.Client, path: str, body: dict) -> float:
    start = time.perf_counter()
    r = http.post(path, json=body)
    elapsed = time.perf_counter() - start
    r.raise_for_status()
    return elapsed


def start_server(explorer: Explorer) -> tuple[uvicorn.Server, str]:
    """The explorer under uvicorn on a free loopback port: (server, base URL)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(explorer), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{port}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="runs/pipeline/cebab-sparsecbm")
    parser.add_argument("--browse-n", type=int, default=500)
    parser.add_argument("--keeps", type=int, default=8, help="Keep/Undo pairs clicked in the browser")
    parser.add_argument("--n", type=int, default=40, help="requests per kind, alone")
    parser.add_argument("--load-requests", type=int, default=25, help="requests per client under load")
    parser.add_argument("--out", default="benchmarks/results/serve.json")
    parser.add_argument("--screenshots", metavar="DIR",
                        help="also save pictures of the page (docs/explorer*.png) to this folder")
    args = parser.parse_args()

    clf = sparsecbm.load(args.model)
    data = dataset_from_spec(clf.data_spec)
    dev = data["dev"].head(args.browse_n)
    server, base = start_server(Explorer(clf, dev, "cebab dev"))

    with httpx.Client(base_url=base, timeout=300) as http:
        rows = http.get("/api/examples", params={"only": "mistakes", "limit": 200}).json()["rows"]
        corrections = [{"index": r["index"], "concept": c, "value": v["true"], "label": r["label"]}
                       for r in rows for c, v in r["concepts"].items() if v["true"] != v["predicted"]]
        http.post("/api/explain", json={"index": 0})  # warm-up (caches of masked weights)
        explain_alone = [timed(http, "/api/explain", {"index": i % len(dev)}) for i in range(args.n)]
        preview_alone = [timed(http, "/api/preview", corrections[i % len(corrections)]) for i in range(args.n)]

    def client(seed: int) -> dict[str, list[float]]:
        out = {"explain": [], "preview": []}
        with httpx.Client(base_url=base, timeout=600) as http:
            for j in range(args.load_requests):
                if (seed + j) % 2:
                    out["preview"].append(timed(http, "/api/preview", corrections[(seed * 7 + j) % len(corrections)]))
                else:
                    out["explain"].append(timed(http, "/api/explain", {"index": (seed * 7 + j) % len(dev)}))
        return out

    start = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        parts = list(pool.map(client, range(8)))
    load_s = time.perf_counter() - start
    result = {
        "machine": machine(),
        "model": args.model, "browse_n": len(dev),
        "command": f"python -m benchmarks.serve --model {args.model} --browse-n {args.browse_n} --n {args.n} "
                   f"--load-requests {args.load_requests} --keeps {args.keeps}",
        "alone": {"explain": percentiles(explain_alone), "preview": percentiles(preview_alone)},
        "under_load_8_clients": {kind: percentiles([t for p in parts for t in p[kind]]) for kind in ("explain", "preview")},
        "load_wall_s": load_s, "load_requests_per_s": 8 * args.load_requests / load_s,
        "targets": {"explain_p95_alone_ms": 300, "preview_p95_alone_ms": 1000, "keep_and_undo_in_browser_ms": 1000},
    }
    server.should_exit = True
    result["in_browser"] = keep_undo_in_browser(args.model, args.browse_n, corrections, args.keeps)
    write_results(Path(args.out), result)
    print(json.dumps(result, indent=1))

    if args.screenshots:
        screenshots(args.model, dev_n=args.browse_n, folder=Path(args.screenshots), corrections=corrections)


@contextlib.contextmanager
def explorer_on_copy(model: str, dev_n: int):
    """The explorer over a copy of ``model`` (edits and saves must not touch it) and its first
    ``dev_n`` dev rows, under uvicorn: (explorer, base URL, the copy's folder)."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "model"
        shutil.copytree(model, copy)
        clf = sparsecbm.load(copy)
        explorer = Explorer(clf, dataset_from_spec(clf.data_spec)["dev"].head(dev_n), "cebab dev")
        server, base = start_server(explorer)
        try:
            yield explorer, base, copy
        finally:
            server.should_exit = True


def keep_undo_in_browser(model: str, dev_n: int, corrections: list[dict], n: int,
                         finished: tuple[str, str] = ("kept", "undone")) -> dict:
    """Click Keep, then Undo, on ``n`` previews of different corrections (on a copy of ``model``):
    the milliseconds from each click to the page's status starting with ``finished`` (pathway,
    history, model line and rows redrawn), and how long the split's scores then took to catch
    up. (``finished``: what an older page said when finished, to time it the same way.)"""
    from playwright.sync_api import sync_playwright

    times: dict[str, list[float]] = {"keep": [], "undo": [], "scores_caught_up": []}
    with explorer_on_copy(model, dev_n) as (explorer, base, _):
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium")
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(base)
            page.wait_for_function("() => document.querySelector('#status').textContent === 'ready'", timeout=300_000)
            page.check("#only-mistakes")  # the rows the corrections come from, in the same order
            page.wait_for_function("() => document.querySelector('#page-info').textContent.startsWith('page 1')")
            page.wait_for_timeout(500)
            done = 0
            for c in corrections:
                if done == n:
                    break
                row = f"#examples tbody tr[data-index='{c['index']}']"
                if not page.locator(row).count():
                    continue  # not on the first page
                page.click(row)
                page.wait_for_function("() => document.querySelector('#status').textContent.startsWith('explained')")
                page.click(f"#concepts tr.concept-row[data-concept='{c['concept']}'] button[data-value='{c['value']}']")
                page.wait_for_selector("#keep-btn", timeout=120_000)
                for kind, button, word in (("keep", "#keep-btn", finished[0]), ("undo", "#undo-btn", finished[1])):
                    start = time.perf_counter()
                    page.click(button)
                    page.wait_for_function("(w) => document.querySelector('#status').textContent.startsWith(w)",
                                           arg=word, timeout=120_000)
                    times[kind].append(time.perf_counter() - start)
                    if kind == "keep" and hasattr(explorer, "settle"):  # (an older explorer had none)
                        explorer.settle()
                        times["scores_caught_up"].append(time.perf_counter() - start)
                done += 1
            browser.close()
    return {kind: percentiles(xs) | {"max_ms": 1000 * max(xs), "each_ms": [round(1000 * x) for x in xs]}
            for kind, xs in times.items() if xs}


def screenshots(model: str, dev_n: int, folder: Path, corrections: list[dict]) -> None:
    """The page's behaviours, one picture each, on a copy of ``model`` (a save conflict writes to it)."""
    from playwright.sync_api import sync_playwright

    folder.mkdir(parents=True, exist_ok=True)
    with explorer_on_copy(model, dev_n) as (explorer, base, copy):
        first = corrections[0]
        row_sel = f"#examples tbody tr[data-index='{first['index']}']"
        value_sel = f"#concepts tr.concept-row[data-concept='{first['concept']}'] button[data-value='{first['value']}']"

        def wait_status(page, start: str) -> None:
            page.wait_for_function("(s) => document.querySelector('#status').textContent.startsWith(s)", arg=start,
                                   timeout=120_000)

        def shot(page, name: str, selector: str | None = None) -> None:
            target = page.locator(selector) if selector else page
            target.screenshot(path=str(folder / name))
            print(f"wrote {folder / name}")

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium")
            page = browser.new_page(viewport={"width": 1500, "height": 1150})
            page.goto(base)
            wait_status(page, "ready")
            page.check("#only-mistakes")
            page.wait_for_selector(row_sel)
            page.focus(row_sel)  # keyboard: the row is focused and opened with Enter
            page.keyboard.press("Enter")
            wait_status(page, "explained")
            page.click(value_sel)
            page.wait_for_selector("#keep-btn", timeout=120_000)
            shot(page, "explorer.png")
            # Keyboard: Tab to another concept's row, Enter shows its words (the focused row is outlined).
            other_concept = next(c for c in explorer.clf.schema.concepts if c != first["concept"])
            page.focus(f"#concepts tr.concept-row[data-concept='{other_concept}']")
            page.keyboard.press("Enter")
            page.wait_for_function("(c) => document.querySelector('#word-concept').textContent.startsWith(c)",
                                   arg=other_concept)
            shot(page, "explorer-keyboard.png", "#pathway")
            # Another client keeps an edit first: Keep refuses the stale preview.
            with httpx.Client(base_url=base, timeout=300) as http:
                v = http.get("/api/model").json()["version"]
                other = next(c for c in corrections if c["index"] != first["index"])
                http.post("/api/keep", json={**other, "version": v}).raise_for_status()
            page.click("#keep-btn")
            page.wait_for_selector("#stale-preview", timeout=120_000)
            shot(page, "explorer-stale-preview.png", "#right")
            page.click("#repreview-btn")
            page.wait_for_selector("#keep-btn", timeout=120_000)
            page.click("#keep-btn")
            page.wait_for_function("() => /^(kept|not kept)/.test(document.querySelector('#status').textContent)",
                                   timeout=120_000)  # (the other client's edit may have made this one unfixable)
            page.click("#undo-btn")
            wait_status(page, "undone")
            shot(page, "explorer-undo.png", "#right")
            # The last page: the forward arrow is off.
            page.uncheck("#only-mistakes")
            page.wait_for_function("() => !document.querySelector('#next-page').disabled")
            while not page.locator("#next-page").is_disabled():
                before = page.inner_text("#page-info")
                page.click("#next-page")
                page.wait_for_function("(b) => document.querySelector('#page-info').textContent !== b", arg=before)
            shot(page, "explorer-last-page.png", "#left")
            page.locator("#subnetworks details").first.evaluate("d => d.open = true")
            shot(page, "explorer-subnetworks.png", "#subnetworks")
            # A save conflict: with an unsaved edit on the page, another program saves the folder
            # first; Save is refused and the page offers a reload.
            with httpx.Client(base_url=base, timeout=300) as http:
                v = http.get("/api/model").json()["version"]
                http.post("/api/keep", json={**other, "version": v}).raise_for_status()
            page.reload()
            wait_status(page, "ready")
            sparsecbm.load(copy).save()
            page.click("#save-btn")
            page.wait_for_selector("#reload-btn")
            page.locator("#conflict").scroll_into_view_if_needed()
            shot(page, "explorer-save-conflict.png", "#right")
            browser.close()


if __name__ == "__main__":
    main()
