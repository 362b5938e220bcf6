"""The explorer (sparsecbm serve): its JSON API on a tiny model, a bounded load test on
loopback, and one real-browser test (Playwright driving Debian's Chromium)."""

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch

import sparsecbm.browsing
from sparsecbm import load
from sparsecbm.explorer import MAX_TEXT, Explorer

from .conftest import CONCEPTS, copy_masks, same_masks
from .explorer_support import chromium_path, fixable


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
    ("/api/explain", {"text": "\u200b\u200d\ufeff \u2060"}, 400, "invisible characters"),
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
    before = copy_masks(client.explorer.clf)
    r = client.post(path, json=body)
    assert r.status_code == status and message in r.json()["error"], r.text
    assert same_masks(before, client.explorer.clf.model.masks) and client.explorer.clf.interventions == []
    assert client.get("/api/examples", params={"limit": 0}).status_code == 400
    assert client.post("/api/explain", content=b"{not json", headers={"Content-Type": "application/json"}).status_code == 400


def test_preview_keep_stale_undo_save(client, model_dir):
    clf = client.explorer.clf
    original = copy_masks(clf)
    index, concept, value, _ = fixable(client)
    preview = client.post("/api/preview", json={"index": index, "concept": concept, "value": value}).json()
    assert preview["version"] == 0 and not preview["result"]["persisted"] and "label" in preview["oracle"]
    assert same_masks(original, clf.model.masks)  # a preview restores the mask
    near = preview["result"]["nearby"]  # the browsed texts most like this one, read before and after
    assert near["n"] == min(20, len(client.explorer.split) - 1) and near["changed"] == len(near["texts"])
    assert all(t["before"] != t["after"] and t["text"] == client.explorer.split.texts[t["row"]] for t in near["texts"])

    kept = client.post("/api/keep", json={"index": index, "concept": concept, "value": value, "version": 0}).json()
    assert kept["result"]["persisted"] and kept["result"]["after"]["value"] == value and kept["version"] == 1, kept["result"]["outcome"]
    assert kept["result"]["bits_flipped"] == sum(d["dropped"] + d["grown"] for d in kept["result"]["per_layer"].values())
    edited = copy_masks(clf)
    assert not same_masks(original, edited)
    after = client.post("/api/explain", json={"index": index}).json()
    assert next(c["value"] for c in after["concepts"] if c["name"] == concept) == value  # the model changed

    stale = client.post("/api/keep", json={"index": index, "concept": concept, "value": value, "version": 0})
    assert stale.status_code == 409 and "stale version 0" in stale.json()["error"]
    assert same_masks(edited, clf.model.masks) and len(clf.interventions) == 1
    assert client.post("/api/undo", json={"version": 0}).status_code == 409

    history = client.get("/api/history").json()
    assert [e["concept"] for e in history["edits"]] == [concept] and history["edits"][0]["values"] == [value]
    saved = client.post("/api/save", json={"version": 1}).json()
    assert saved["edits"] == 1 and Path(saved["path"]) == model_dir
    reloaded = load(model_dir)
    assert same_masks(edited, reloaded.model.masks) and len(reloaded.interventions) == 1

    undone = client.post("/api/undo", json={"version": 1}).json()
    assert undone["version"] == 2 and undone["edits"] == []
    assert same_masks(original, clf.model.masks)


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
    assert same_masks(copy_masks(explorer.clf), load(model_dir).model.masks)


def _concept_value(page, concept: str) -> str:
    return page.locator(f"#concepts tr.concept-row[data-concept='{concept}'] button.predicted").inner_text()


def _wait_value(page, concept: str, value: str) -> None:
    page.wait_for_function(
        "([c, v]) => document.querySelector(`#concepts tr.concept-row[data-concept='${c}'] button.predicted`)"
        "?.textContent === v", arg=[concept, value])


def _wait_status(page, start: str) -> None:
    page.wait_for_function("(s) => document.querySelector('#status').textContent.startsWith(s)", arg=start)


def test_real_browser_pathway_correct_undo(server, tmp_path, model_dir):
    """The page as a person uses it, mouse and keyboard: every check names what it guards."""
    from playwright.sync_api import sync_playwright

    explorer, base = server
    shots = tmp_path / "shots"
    shots.mkdir()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(base)
        page.wait_for_selector("#examples tbody tr")
        _wait_status(page, "ready")
        # The free-text box comes before the examples table.
        assert page.locator("#free-text").bounding_box()["y"] < page.locator("#examples").bounding_box()["y"]
        # Paging has an end: 16 rows at 20 a page is one page, and both arrows are off.
        assert page.inner_text("#page-info") == "page 1 of 1 (16 rows)"
        assert page.locator("#next-page").is_disabled() and page.locator("#prev-page").is_disabled()
        # The model line names the labels; the heatmaps are labelled and have a colour scale.
        assert "labels bad, good" in page.inner_text("#model-line")
        page.locator("#subnetworks details").first.evaluate("d => d.open = true")
        captions = page.locator("#subnetworks details >> nth=0 >> figcaption")
        assert captions.count() == page.locator("#subnetworks details >> nth=0 >> canvas").count() > 0
        assert captions.first.inner_text().startswith("layer 0") and page.locator("#heat-scale").count() == 1

        page.fill("#free-text", "the food was awful and the service lovely , prices some .")
        page.click("#explain-btn")  # free text: the pathway of a typed review
        page.wait_for_selector("#concepts tr.concept-row")
        assert page.locator("#words span.w").count() == 12
        # The pathway says how much the concept values decide, from the explanation itself.
        e = explorer.clf.explain("the food was awful and the service lovely , prices some .", method=None)
        decides = page.inner_text("#decides")
        assert f"carry {100 * e.concept_share:.1f}%" in decides
        assert ("alone would give label" in decides) == (e.values_label != e.label)
        # Beside each concept: the label were it each of its other values (the explanation's what_if).
        for name, alternatives in e.what_if.items():
            shown = page.inner_text(f"#concepts tr.concept-row[data-concept='{name}'] td.what-if")
            for value, w in alternatives.items():
                assert f"{value} \u2192 {w.label} ({100 * w.probability:.1f}%)" in shown, (name, shown)
        # Label bars carry the label names and their probabilities.
        probs = page.inner_text("#label-probs")
        assert "bad" in probs and "good" in probs and probs.count("%") == 2
        # grad scores have no sign, and the legend says so; a signed method gets the green/red legend.
        assert "no sign" in page.inner_text("#word-legend")
        page.select_option("#method", "grad_x_input")
        page.wait_for_function("() => document.querySelector('#word-legend').textContent.includes('green')")
        page.select_option("#method", "grad")
        page.wait_for_function("() => document.querySelector('#word-legend').textContent.includes('no sign')")
        assert page.locator("th", has_text="true value").count() == 0  # a typed text has no true values

        with httpx.Client(base_url=base, timeout=120) as http:
            index, concept, target, predicted = fixable(http)
        # Keyboard only: Tab to a row, Enter opens it; Tab to a concept row, Enter shows its words.
        row = page.locator(f"#examples tbody tr[data-index='{index}']")
        row.focus()
        page.keyboard.press("Enter")
        page.wait_for_selector(f"#examples tr.selected[data-index='{index}']")
        _wait_status(page, "explained")
        assert page.locator("th", has_text="true value").count() == 1  # a data set row shows its true values
        truth = explorer.split.concepts[index]
        for k, name in enumerate(CONCEPTS):
            true_value = explorer.clf.schema.concept_values[k][truth[k]]
            concept_row = page.locator(f"#concepts tr.concept-row[data-concept='{name}']")
            assert concept_row.locator("td.true-value").inner_text() == true_value
            assert concept_row.locator("button.true").inner_text() == true_value
        other = next(c for c in CONCEPTS if c != page.inner_text("#word-concept").split(" ")[0])
        page.locator(f"#concepts tr.concept-row[data-concept='{other}']").focus()
        page.keyboard.press("Enter")
        page.wait_for_function("(c) => document.querySelector('#word-concept').textContent.startsWith(c)", arg=other)

        concept_row = page.locator(f"#concepts tr.concept-row[data-concept='{concept}']")
        assert _concept_value(page, concept) == predicted
        concept_row.locator(f"button[data-value='{target}']").click()
        page.wait_for_selector("#keep-btn")
        text = page.inner_text("#correction")
        assert "weights of" in text and "Preview only" in text and "persist" not in text  # plain wording
        assert "texts of reviews dev most like this one, the edit changes" in page.inner_text("#nearby summary")
        page.screenshot(path=str(shots / "preview.png"), full_page=True)

        # A 409: another client edits first; Keep then refuses the stale preview and offers a new one.
        with httpx.Client(base_url=base, timeout=120) as http:
            version = http.get("/api/model").json()["version"]
            other_edit = http.post("/api/keep", json={"index": index, "concept": concept, "value": target,
                                                      "version": version}).json()
            assert other_edit["result"]["persisted"]
            http.post("/api/undo", json={"version": other_edit["version"]}).raise_for_status()
        page.click("#keep-btn")
        page.wait_for_selector("#stale-preview")
        assert page.locator("#keep-btn").count() == 0 and explorer.clf.interventions == []
        page.click("#repreview-btn")
        page.wait_for_selector("#keep-btn")
        page.click("#keep-btn")
        _wait_status(page, "kept")
        assert _concept_value(page, concept) == target
        assert "Kept:" in page.inner_text("#correction") and page.locator("#history li").count() == 1
        assert len(explorer.clf.interventions) == 1

        # Undo clears the Correction box (it no longer says "Kept").
        page.click("#undo-btn")
        _wait_status(page, "undone")
        assert _concept_value(page, concept) == predicted
        assert "Kept:" not in page.inner_text("#correction") and "Undone" in page.inner_text("#correction")
        assert page.locator("#history li").count() == 0 and explorer.clf.interventions == []
        # Opening another example clears it too.
        concept_row.locator(f"button[data-value='{target}']").click()
        page.wait_for_selector("#keep-btn")
        page.click("#keep-btn")
        _wait_status(page, "kept")
        page.locator(f"#examples tbody tr[data-index='{(index + 1) % 16}']").click()
        _wait_status(page, "explained")
        assert page.inner_text("#correction").startswith("Click a concept value")

        # A save conflict: another program saves the folder; the page offers to reload it.
        other = load(model_dir)
        other.save()
        page.click("#save-btn")
        page.wait_for_selector("#reload-btn")
        page.screenshot(path=str(shots / "conflict.png"), full_page=True)
        page.click("#reload-btn")
        _wait_status(page, "reloaded")
        assert f"Reloaded revision {other.revision}" in page.inner_text("#conflict")
        assert page.locator("#history li").count() == 0
        assert explorer.clf.interventions == [] and explorer.clf.revision == other.revision
        assert page.locator("#save-btn").is_disabled()  # the folder holds every edit: nothing to save
        browser.close()
    assert all(f.stat().st_size > 10_000 for f in shots.iterdir())


def test_keep_answers_before_the_split_is_repredicted_and_undo_restores_it(client, model_dir, monkeypatch):
    """A keep does not re-predict the browse split while the user waits: the split's scores
    are marked pending and refreshed in the background; an undo puts them back at once."""
    explorer = client.explorer
    index, concept, value, _ = fixable(client)
    before = client.get("/api/model").json()
    assert before["pending"] is False and before["unsaved"] is False
    page = client.get("/api/examples", params={"sort": "confidence", "limit": 6}).json()
    order = [r["index"] for r in page["rows"]]
    monkeypatch.setattr(sparsecbm.browsing, "REFRESH_GRACE", 3.0)  # the refresh starts after the checks below
    kept = client.post("/api/keep", json={"index": index, "concept": concept, "value": value, "version": 0}).json()
    assert kept["result"]["persisted"]
    during = client.get("/api/model").json()
    assert during["pending"] is True and during["scores"] == before["scores"]  # the previous predictions meanwhile
    assert during["unsaved"] is True
    again = client.get("/api/examples", params={"rows": ",".join(map(str, order[::-1]))}).json()
    assert [r["index"] for r in again["rows"]] == order[::-1] and again["pending"] is True
    explorer.settle()
    after = client.get("/api/model").json()
    assert after["pending"] is False
    fresh = Explorer(explorer.clf, explorer.split, "the same split, predicted from scratch").model()
    assert after["scores"] == fresh["scores"]
    undone = client.post("/api/undo", json={"version": 1}).json()
    assert undone["version"] == 2
    assert client.get("/api/model").json() == {**before, "version": 2}  # at once, and exactly as before the keep
    assert client.get("/api/examples", params={"rows": "99"}).status_code == 400


def test_save_writes_a_revision_only_when_there_is_something_new(client, model_dir):
    index, concept, value, _ = fixable(client)
    nothing = client.post("/api/save", json={"version": 0}).json()
    revision = nothing["revision"]
    assert nothing["saved"] is False and "nothing new to save" in nothing["message"]
    assert load(model_dir).revision == revision
    client.post("/api/keep", json={"index": index, "concept": concept, "value": value, "version": 0})
    assert client.get("/api/history").json()["edits"][0]["saved"] is False
    saved = client.post("/api/save", json={"version": 1}).json()
    assert saved["saved"] is True and saved["revision"] != revision
    history = client.get("/api/history").json()
    assert history["edits"][0]["saved"] is True and history["unsaved"] is False
    assert client.post("/api/save", json={"version": 1}).json()["saved"] is False
    client.post("/api/undo", json={"version": 1})
    assert client.get("/api/history").json()["unsaved"] is True  # the folder still holds the undone edit


def _no_scroll_x(page) -> bool:
    return page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")


def _in_view(page, selector: str) -> bool:
    box = page.locator(selector).bounding_box()
    size = page.viewport_size
    return box is not None and 0 <= box["y"] and box["y"] + box["height"] <= size["height"] and box["x"] + box["width"] <= size["width"]


@pytest.mark.parametrize("viewport", [{"width": 390, "height": 844}, {"width": 1280, "height": 800}],
                         ids=["phone", "laptop"])
def test_real_browser_first_time_user(server, viewport):
    """What a first-time user met (issue 38), at a phone's size and a laptop's: no horizontal
    scrolling, one header line, Keep in view and focused after a preview, a double-clicked
    Keep keeps once, Undo off with nothing to undo, the selection and the list's order kept
    after an edit, a text over the limit answered where its pathway would be, no uncaught
    errors and no missing favicon."""
    from playwright.sync_api import sync_playwright

    explorer, base = server
    with httpx.Client(base_url=base, timeout=120) as http:
        index, concept, target, predicted = fixable(http)
    truth = explorer.clf.schema.concept_values[list(CONCEPTS).index(concept)][explorer.split.concepts[index][list(CONCEPTS).index(concept)]]
    errors, missing = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), headless=True)
        page = browser.new_page(viewport=viewport)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" and "Uncaught" in m.text else None)
        page.on("response", lambda r: missing.append(r.url) if r.status == 404 else None)
        page.goto(base)
        _wait_status(page, "ready")
        assert _no_scroll_x(page), page.evaluate("() => document.documentElement.scrollWidth")
        assert page.locator("#undo-btn").is_disabled() and page.locator("#save-btn").is_disabled()
        header = page.locator("header h1").bounding_box()
        if viewport["width"] > 820:  # one header line, however long the status
            page.evaluate("() => { document.querySelector('#status').textContent = 'x '.repeat(300); }")
            assert page.locator("header").bounding_box()["height"] < 2.2 * header["height"]

        # A text over the limit: the box stops at it, and the pathway area says why when it is forced past.
        limit = page.evaluate("() => document.querySelector('#free-text').maxLength")
        assert limit == MAX_TEXT and f"/ {MAX_TEXT} characters" in page.inner_text("#text-count")
        page.evaluate("(n) => { document.querySelector('#free-text').value = 'good food. '.repeat(n); }", MAX_TEXT // 10 + 28)
        page.click("#explain-btn")
        page.wait_for_selector("#explain-error")
        assert "at most" in page.inner_text("#explain-error") and page.locator("#concepts").count() == 0
        with httpx.Client(base_url=base, timeout=60) as http:  # the server refuses it too, with the same words
            r = http.post("/api/explain", json={"text": "x" * 2280}, headers={"Origin": base})
            assert r.status_code == 413

        # Sorted by confidence: the order the user reads must survive an edit.
        page.select_option("#sort", "confidence")
        page.wait_for_function("() => document.querySelector('#examples tbody tr')")
        page.wait_for_timeout(300)
        order = page.locator("#examples tbody tr").evaluate_all("rows => rows.map(r => r.dataset.index)")
        row = page.locator(f"#examples tbody tr[data-index='{index}']")
        row.scroll_into_view_if_needed()
        row.focus()
        page.keyboard.press("Enter")
        _wait_status(page, "explained")
        # The focus moves to the pathway's first concept: the next Tabs go through the pathway.
        assert page.evaluate("() => document.activeElement.matches('#concepts tr.concept-row')")
        value_button = page.locator(f"#concepts tr.concept-row[data-concept='{concept}'] button[data-value='{target}']")
        value_button.focus()
        page.keyboard.press("Enter")
        page.wait_for_selector("#keep-btn")
        page.wait_for_function("() => document.activeElement && document.activeElement.id === 'keep-btn'")
        assert _in_view(page, "#keep-btn") and _no_scroll_x(page)
        words = page.inner_text("#correction")
        if target == truth:
            assert "fixes it" in words
        else:
            assert "fixes" not in words and f"read {target}" in words and f"the data set's value is {truth}" in words

        page.dblclick("#keep-btn")  # a double-click keeps once, with no 409
        _wait_status(page, "kept")
        assert _concept_value(page, concept) == target
        assert page.locator("#stale-preview").count() == 0 and len(explorer.clf.interventions) == 1
        assert page.evaluate("() => document.activeElement !== document.body")
        assert page.locator(f"#examples tr.selected[data-index='{index}']").count() == 1
        assert page.locator("#examples tbody tr").evaluate_all("rows => rows.map(r => r.dataset.index)") == order
        assert "not saved yet" in page.inner_text("#history") and not page.locator("#undo-btn").is_disabled()
        explorer.settle()
        page.wait_for_function("() => !document.querySelector('#pending')")  # the split's scores caught up

        page.click("#undo-btn")
        _wait_status(page, "undone")
        assert _concept_value(page, concept) == predicted
        assert page.locator("#undo-btn").is_disabled() and explorer.clf.interventions == []
        assert page.evaluate("() => document.activeElement !== document.body")
        assert page.locator(f"#examples tr.selected[data-index='{index}']").count() == 1
        assert _no_scroll_x(page)
        browser.close()
    assert errors == [] and missing == [], (errors, missing)


def test_keep_applies_the_previewed_edit_without_searching_again(client, monkeypatch):
    """Keep right after a preview keeps exactly the previewed bits (no second search: half of
    a Keep's wait); a preview made on another model version is searched again."""
    import sparsecbm.interventions.rewire as rewire

    index, concept, value, _ = fixable(client)
    body = {"index": index, "concept": concept, "value": value}
    client.post("/api/preview", json=body)
    search = rewire.edit

    def no_search(*args, **kwargs):
        raise AssertionError("Keep searched again for the edit it had previewed")

    monkeypatch.setattr(rewire, "edit", no_search)
    kept = client.post("/api/keep", json={**body, "version": 0}).json()
    assert kept["result"]["persisted"]
    previewed = client.explorer.clf.interventions[-1]
    client.post("/api/undo", json={"version": 1})
    with pytest.raises(AssertionError, match="searched again"):  # the preview was of version 0, the model is at 2
        client.post("/api/keep", json={**body, "version": 2})
    monkeypatch.setattr(rewire, "edit", search)
    searched = client.post("/api/keep", json={**body, "version": 2}).json()
    assert searched["result"]["persisted"]
    fresh = client.explorer.clf.interventions[-1]
    assert torch.equal(previewed.drop, fresh.drop) and torch.equal(previewed.grow, fresh.grow)
