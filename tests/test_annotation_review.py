"""Reviewing an annotated file in the explorer: rows least confident first, a person's fix
written back to the file (and nothing else changed), a file changed on disk never overwritten,
and the fix endpoint closed to other web sites like every other."""

from __future__ import annotations

import csv
import json

import pytest
from starlette.testclient import TestClient

from sparsecbm.annotation import annotate
from sparsecbm.annotation.review import AnnotationFile, FileChanged
from sparsecbm.cli import main
from sparsecbm.data import DataError
from sparsecbm.explorer import create_app

from .annotation_support import REVIEWS, BagOfWords, write_csv
from .conftest import make_explorer
from .explorer_support import LOCAL, chromium_path, running

JSON = {"Content-Type": "application/json"}


@pytest.fixture(params=[".csv", ".jsonl"])
def annotated(request, tmp_path, concept_file):
    data = write_csv(tmp_path / "reviews.csv", ["id", "text", "stars"], [(i, t, s) for i, (t, s) in enumerate(REVIEWS)])
    return annotate(data, concept_file, encoder=BagOfWords()).write(tmp_path / f"reviews.annotated{request.param}")


def _records(path):
    if path.suffix == ".csv":
        return list(csv.DictReader(path.open(encoding="utf-8")))
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_rows_come_least_confident_first_and_a_fix_is_written_back(annotated, concept_file):
    review = AnnotationFile(annotated, concept_file)
    page = review.page()
    lowest = [min(c["confidence"] for c in r["concepts"].values()) for r in page["rows"]]
    assert lowest == sorted(lowest) and page["total"] == 3
    by_service = [r["concepts"]["service"]["confidence"] for r in review.page("service")["rows"]]
    assert by_service == sorted(by_service)
    before = _records(annotated)
    fixed = review.fix(2, "food", "Negative")
    assert fixed["row"] == (4 if annotated.suffix == ".csv" else 3) and fixed["confidence"] == 1.0
    after = _records(annotated)
    assert after[2]["food"] == "Negative" and float(after[2]["food_confidence"]) == 1.0
    assert after[:2] == before[:2] and {k: v for k, v in after[2].items() if not k.startswith("food")} == \
        {k: v for k, v in before[2].items() if not k.startswith("food")}
    assert not list(annotated.parent.glob("*.tmp*"))  # written to a temporary name, then renamed
    assert AnnotationFile(annotated, concept_file).page("food")["rows"][-1]["concepts"]["food"]["value"] == "Negative"


def test_a_file_changed_on_disk_is_not_overwritten(annotated, concept_file):
    review = AnnotationFile(annotated, concept_file)
    edited = annotated.read_text().replace("Positive", "not said", 1)
    annotated.write_text(edited + ("\n" if annotated.suffix == ".csv" else ""))
    with pytest.raises(FileChanged, match="changed on disk"):
        review.fix(0, "service", "Positive")
    assert annotated.read_text().startswith(edited)  # the other writer's change is kept
    review.fix(0, "service", "Positive")  # read again: the next fix goes through


def test_bad_fixes_and_bad_files_get_clear_errors(annotated, concept_file, tmp_path):
    review = AnnotationFile(annotated, concept_file)
    for args, message in (((9, "food", "Positive"), r"index: expected a row index in \[0, 3\)"),
                          ((0, "price", "Positive"), "concept: unknown 'price'"),
                          ((0, "food", "great"), "value: 'great' is not a value of 'food'")):
        with pytest.raises(ValueError, match=message):
            review.fix(*args)
    bad = write_csv(tmp_path / "bad.csv", ["text", "food", "food_confidence", "service", "service_confidence"],
                    [("nice", "Positive", "0.9", "so-so", "0.5")])
    with pytest.raises(DataError, match=r"bad.csv: row 2: column 'service': value 'so-so' is not one of"):
        AnnotationFile(bad, concept_file)
    worse = write_csv(tmp_path / "worse.csv", ["text", "food", "food_confidence", "service", "service_confidence"],
                      [("nice", "Positive", "high", "not said", "0.5")])
    with pytest.raises(DataError, match=r"worse.csv: row 2: column 'food_confidence': expected a number"):
        AnnotationFile(worse, concept_file)


def test_explorer_serves_the_file_and_refuses_forged_fixes(model_dir, reviews, annotated, concept_file):
    explorer = make_explorer(model_dir, reviews)
    with TestClient(create_app(explorer), base_url=LOCAL) as c:
        assert c.get("/api/annotations").status_code == 404 and c.get("/api/model").json()["annotations"] is None
        explorer.annotations = AnnotationFile(annotated, concept_file)
        assert c.get("/api/model").json()["annotations"]["n"] == 3
        assert c.get("/api/annotations?concept=food&limit=2").json()["total"] == 3
        body = json.dumps({"index": 0, "concept": "food", "value": "not said"}).encode()
        disk = annotated.read_bytes()
        for headers, status in (({"Content-Type": "text/plain"}, 415), ({**JSON, "Origin": "http://evil.example"}, 403),
                                ({**JSON, "Host": "evil.example:8765"}, 403)):
            assert c.post("/api/annotations/fix", content=body, headers=headers).status_code == status
        assert annotated.read_bytes() == disk
        r = c.post("/api/annotations/fix", content=body, headers={**JSON, "Origin": LOCAL})
        assert r.status_code == 200 and _records(annotated)[0]["food"] == "not said"
        bad = c.post("/api/annotations/fix", json={"index": 0, "concept": "food", "value": "meh"})
        assert bad.status_code == 400 and "not a value of 'food'" in bad.json()["error"]


def test_serve_needs_the_concept_file_with_the_annotations(model_dir, annotated, capsys):
    assert main(["serve", str(model_dir), "--annotations", str(annotated)]) == 2
    assert "--annotations and --concepts go together" in capsys.readouterr().err


def test_real_browser_fixes_a_value_into_the_file(model_dir, reviews, annotated, concept_file):
    from playwright.sync_api import sync_playwright

    explorer = make_explorer(model_dir, reviews)
    explorer.annotations = AnnotationFile(annotated, concept_file)
    with running(create_app(explorer)) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), headless=True)
        page = browser.new_page()
        page.goto(base)
        page.wait_for_selector("#annotations tbody tr")
        assert page.inner_text("#annotations-info") == "page 1 of 1 (3 rows)"
        row = page.locator("#annotations tbody tr[data-index='1']")
        row.locator("select[data-concept='service']").select_option("not said")
        page.wait_for_function("() => document.querySelector('#status').textContent.includes('written to')")
        assert _records(annotated)[1]["service"] == "not said"
        browser.close()
