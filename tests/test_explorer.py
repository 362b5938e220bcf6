"""The explorer (sparsecbm serve): its JSON API on a tiny model, a bounded load test on
loopback, and one real-browser test (Playwright driving Debian's Chromium)."""

import json
import shutil
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch
from starlette.testclient import TestClient

from sparsecbm import load, load_dataset
from sparsecbm.explorer import MAX_TEXT, Explorer, create_app

from .conftest import CONCEPTS, train_tiny_sparsecbm


@pytest.fixture(scope="module")
def trained(tmp_path_factory, reviews, tiny_bert):
    _, out = train_tiny_sparsecbm(tmp_path_factory.mktemp("explorer") / "m", reviews, tiny_bert)
    return out


@pytest.fixture
def model_dir(trained, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(trained, folder)
    return folder


def _explorer(model_dir, reviews):
    clf = load(model_dir)
    data = load_dataset(reviews["train"], dev=reviews["dev"], test=reviews["test"], text_column="text",
                        label_column="stars", concept_columns=CONCEPTS)
    return Explorer(clf, data["dev"], "reviews dev", max_ratio=0.3)


@pytest.fixture
def client(model_dir, reviews):
    explorer = _explorer(model_dir, reviews)
    with TestClient(create_app(explorer)) as c:
        c.explorer = explorer
        yield c


def _masks(clf):
    return {c: {n: m.clone() for n, m in per.items()} for c, per in clf.model.masks.items()}


def _same(a, b):
    return all(torch.equal(a[c][n], b[c][n]) for c in a for n in a[c])


def _fixable(http):
    """(row, concept, value, predicted) of a correction whose preview fixes it (the tiny model cannot fix every one)."""
    model = http.get("/api/model").json()
    for index in range(model["split"]["n"]):
        e = http.post("/api/explain", json={"index": index}).json()
        for c in e["concepts"]:
            for value in model["concepts"][c["name"]]:
                if value == c["value"]:
                    continue
                r = http.post("/api/preview", json={"index": index, "concept": c["name"], "value": value}).json()
                if r["result"]["fixed"]:
                    return index, c["name"], value, c["value"]
    raise AssertionError("no correction of the tiny model is fixable")


def test_page_and_read_only_api(client):
    page = client.get("/")
    assert page.status_code == 200 and "sparsecbm explorer" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing fetched from elsewhere
    js = client.get("/static/app.js").text
    assert "https://" not in js and "http://" not in js
    m = client.get("/api/model").json()
    assert m["kind"] == "sparsecbm" and list(m["concepts"]) == list(CONCEPTS) and m["version"] == 0
    assert m["split"] == {"name": "reviews dev", "n": 16} and 0 <= m["scores"]["task"]["accuracy"] <= 1
    rows = client.get("/api/examples", params={"limit": 5}).json()
    assert rows["total"] == 16 and [r["index"] for r in rows["rows"]] == [0, 1, 2, 3, 4]
    mistakes = client.get("/api/examples", params={"only": "mistakes", "concept": "food", "sort": "confidence",
                                                   "limit": 200}).json()
    assert all(r["concepts"]["food"]["true"] != r["concepts"]["food"]["predicted"] for r in mistakes["rows"])
    conf = [r["confidence"] for r in mistakes["rows"]]
    assert conf == sorted(conf)
    e = client.post("/api/explain", json={"text": "the food was awful", "method": "grad_x_input"}).json()
    assert sorted(c["name"] for c in e["concepts"]) == sorted(CONCEPTS) and e["method"] == "grad_x_input"
    assert [t["text"] for t in e["concepts"][0]["tokens"]] == ["the", "food", "was", "awful"]
    sub = client.get("/api/subnetworks").json()
    assert set(sub["concepts"]) == set(CONCEPTS) and sub["concepts"]["food"]["heatmaps"]


@pytest.mark.parametrize("path, body, status, message", [
    ("/api/explain", {"text": ""}, 400, "text: required"),
    ("/api/explain", {"text": "x" * (MAX_TEXT + 1)}, 413, f"at most {MAX_TEXT}"),
    ("/api/explain", {"index": 99}, 400, "index: expected a row number in"),
    ("/api/explain", {"text": "ok", "method": "lime"}, 400, "method: expected one of"),
    ("/api/preview", {"text": "ok", "concept": "taste", "value": "Positive"}, 400, "concept: unknown 'taste'"),
    ("/api/preview", {"text": "ok", "concept": "food", "value": "Great"}, 400, "value: 'Great' is not a value"),
    ("/api/preview", {"text": "ok", "concept": "food", "value": "Positive", "label": "meh"}, 400, "label: 'meh'"),
    ("/api/keep", {"text": "ok", "concept": "food", "value": "Positive"}, 400, "version: required"),
    ("/api/undo", {"version": 0}, 400, "nothing to undo"),
    ("/api/keep", [], 400, "must be a JSON object"),
])
def test_bad_input_gets_a_clear_error_and_changes_nothing(client, path, body, status, message):
    before = _masks(client.explorer.clf)
    r = client.post(path, json=body)
    assert r.status_code == status and message in r.json()["error"], r.text
    assert _same(before, client.explorer.clf.model.masks) and client.explorer.clf.interventions == []
    assert client.get("/api/examples", params={"limit": 0}).status_code == 400
    assert client.post("/api/explain", content=b"{not json").status_code == 400


def test_preview_keep_stale_undo_save(client, model_dir):
    clf = client.explorer.clf
    original = _masks(clf)
    index, concept, value, _ = _fixable(client)
    preview = client.post("/api/preview", json={"index": index, "concept": concept, "value": value}).json()
    assert preview["version"] == 0 and not preview["result"]["persisted"] and "label" in preview["oracle"]
    assert _same(original, clf.model.masks)  # a preview restores the mask

    kept = client.post("/api/keep", json={"index": index, "concept": concept, "value": value, "version": 0}).json()
    assert kept["result"]["persisted"] and kept["result"]["after"]["value"] == value and kept["version"] == 1, kept["result"]["outcome"]
    assert kept["result"]["bits_flipped"] == sum(d["dropped"] + d["grown"] for d in kept["result"]["per_layer"].values())
    edited = _masks(clf)
    assert not _same(original, edited)
    after = client.post("/api/explain", json={"index": index}).json()
    assert next(c["value"] for c in after["concepts"] if c["name"] == concept) == value  # the model changed

    stale = client.post("/api/keep", json={"index": index, "concept": concept, "value": value, "version": 0})
    assert stale.status_code == 409 and "stale version 0" in stale.json()["error"]
    assert _same(edited, clf.model.masks) and len(clf.interventions) == 1
    assert client.post("/api/undo", json={"version": 0}).status_code == 409

    history = client.get("/api/history").json()
    assert [e["concept"] for e in history["edits"]] == [concept] and history["edits"][0]["values"] == [value]
    saved = client.post("/api/save", json={"version": 1}).json()
    assert saved["edits"] == 1 and Path(saved["path"]) == model_dir
    reloaded = load(model_dir)
    assert _same(edited, reloaded.model.masks) and len(reloaded.interventions) == 1

    undone = client.post("/api/undo", json={"version": 1}).json()
    assert undone["version"] == 2 and undone["edits"] == []
    assert _same(original, clf.model.masks)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(model_dir, reviews):
    """The explorer under a real uvicorn server on loopback."""
    import uvicorn

    explorer = _explorer(model_dir, reviews)
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(explorer), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not srv.started:
        assert time.time() < deadline, "the server did not start"
        time.sleep(0.05)
    yield explorer, f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


def test_eight_clients_two_hundred_mixed_requests(server, model_dir):
    explorer, base = server
    concepts = list(explorer.clf.schema.concepts)
    values = {c: list(v) for c, v in zip(concepts, explorer.clf.schema.concept_values)}
    counts = {"keep": 0, "undo": 0}
    lock = threading.Lock()

    def client_run(seed: int) -> list[int]:
        statuses = []
        with httpx.Client(base_url=base, timeout=120) as http:
            for j in range(25):
                i, kind = (seed * 25 + j) % 16, ("explain", "preview", "keep", "undo")[(seed + j) % 4]
                concept = concepts[j % len(concepts)]
                version = http.get("/api/model").json()["version"] if kind in ("keep", "undo") else None
                if kind == "explain":
                    r = http.post("/api/explain", json={"index": i})
                elif kind == "undo":
                    r = http.post("/api/undo", json={"version": version})
                else:
                    body = {"index": i, "concept": concept, "value": values[concept][j % 3]}
                    r = http.post(f"/api/{kind}", json={**body, "version": version} if kind == "keep" else body)
                statuses.append(r.status_code)
                if r.status_code == 200 and kind in counts and (kind == "undo" or r.json()["result"]["persisted"]):
                    with lock:
                        counts[kind] += 1
        return statuses

    with ThreadPoolExecutor(8) as pool:
        statuses = [s for part in pool.map(client_run, range(8)) for s in part]
    assert len(statuses) == 200 and all(s < 500 for s in statuses), sorted(set(statuses))
    assert {200, 409} >= set(statuses) - {400}  # 409: a stale version; 400: nothing left to undo
    assert counts["keep"] > 0 and len(explorer.clf.interventions) == counts["keep"] - counts["undo"]
    version = httpx.get(f"{base}/api/model").json()["version"]
    assert httpx.post(f"{base}/api/save", json={"version": version}, timeout=60).status_code == 200
    assert _same(_masks(explorer.clf), load(model_dir).model.masks)


def test_real_browser_pathway_correct_undo(server, tmp_path):
    from playwright.sync_api import sync_playwright

    explorer, base = server
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(base)
        page.wait_for_selector("#examples tbody tr")
        page.fill("#free-text", "the food was awful and the service lovely , prices some .")
        page.click("#explain-btn")  # free text: the pathway of a typed review
        page.wait_for_selector("#concepts tr.concept-row")
        assert "label" in page.inner_text("#pathway") and page.locator("#words span.w").count() == 12
        with httpx.Client(base_url=base, timeout=120) as http:
            index, concept, target, predicted = _fixable(http)
        page.click(f"#examples tbody tr[data-index='{index}']")  # a row of the split
        page.wait_for_selector(f"#examples tr.selected[data-index='{index}']")
        page.wait_for_function("() => document.querySelector('#status').textContent.startsWith('explained')")
        row = page.locator(f"#concepts tr.concept-row[data-concept='{concept}']")
        assert row.locator("button.predicted").inner_text() == predicted
        row.locator(f"button[data-value='{target}']").click()
        page.wait_for_selector("#keep-btn")
        assert "bits flipped" in page.inner_text("#correction")
        page.click("#keep-btn")
        page.wait_for_function(
            "([c, v]) => document.querySelector(`#concepts tr.concept-row[data-concept='${c}'] button.predicted`)"
            "?.textContent === v", arg=[concept, target])
        assert page.locator("#history li").count() == 1
        page.screenshot(path=str(tmp_path / "explorer.png"), full_page=True)
        page.click("#undo-btn")
        page.wait_for_function(
            "([c, v]) => document.querySelector(`#concepts tr.concept-row[data-concept='${c}'] button.predicted`)"
            "?.textContent === v", arg=[concept, predicted])
        assert page.locator("#history li").count() == 0
        browser.close()
    assert (tmp_path / "explorer.png").stat().st_size > 10_000
    assert explorer.clf.interventions == []
