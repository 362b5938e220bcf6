"""``sparsecbm serve``: a local web app over a saved model to browse a split, read a
prediction's pathway and correct it.

The page and its script ship in the package (``static/explorer``); nothing is
fetched at run time. The JSON API (documented in docs/explorer.md) is what the page
uses and what a script can drive. Every request that touches the model holds
one lock, so explanations, previews and edits never interleave; a request that
changes the model names the ``version`` it was made against, and a stale one
gets 409 and changes nothing.

A kept edit or an undo answers at once: the browse split's predictions of the
edited concept are recomputed in the background (:mod:`sparsecbm.browsing`), and
``/api/model`` and ``/api/examples`` say ``"pending": true`` and serve the
previous predictions until they are ready. Undoing an edit whose predictions
were fresh when it was kept puts them back at once (the undo is bit-exact).

No request names a file: saving writes the folder the model was loaded from
(only when it lacks some kept edit: no empty revisions), reloading reads it
back, and an annotation fix writes the one annotated file named at start
(``--annotations``).

Before any of that, :mod:`sparsecbm.access` refuses requests from other web
sites (Host, Origin and Content-Type checks, a body limit, and a token when
the server listens beyond loopback); every error is a JSON ``{"error": ...}``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .access import MAX_BODY, AccessControl, allowed_hosts
from .annotation.review import AnnotationFile, FileChanged
from .browsing import BrowseSplit, ModelLock
from .classifier import Classifier, load
from .data import Split, is_blank
from .explanations import METHODS, SIGNED, explain, subnetworks
from .interventions import MAX_RATIO, Guard, Nearby, check_max_ratio, oracle, undo
from .interventions.nearby import COUNT as NEAREST
from .interventions.nearby import check_count
from .metrics import evaluate_predictions
from .outputs import predicted_values

STATIC = Path(__file__).parent / "static" / "explorer"
MAX_TEXT = 2000  # characters of one text sent to the explorer
MAX_LIMIT = 200  # rows per page of the examples table
SORTS = ("index", "confidence")


class ApiError(Exception):
    """A request the explorer refuses: HTTP ``status`` and one clear message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Explorer:
    """The model being explored, its browse split and guard, and the edit version."""

    def __init__(
        self, clf: Classifier, split: Split | None = None, split_name: str = "", *, guard: Guard | None = None,
        max_ratio: float = MAX_RATIO, ceiling: dict[str, float] | None = None,
        annotations: AnnotationFile | None = None, nearest: int = NEAREST,
    ) -> None:
        clf.require_masks("for the explorer to correct")
        self.clf, self.split, self.split_name, self.guard = clf, split, split_name, guard
        self.annotations = annotations  # an annotated file to review (sparsecbm annotate), or None
        self.max_ratio, self.ceiling = check_max_ratio(max_ratio), ceiling
        self.version = 0  # bumped by every kept edit and undo
        self.lock = ModelLock()
        # Concept logits on the browse split, recomputed per concept (in the background) when its masks change.
        self._browse = BrowseSplit(split.texts, self.lock, lambda: self.clf) if split is not None and len(split) else None
        # Each preview (not Keep: the user has seen it) reads the ``nearest`` browsed texts most like the
        # corrected one before and after the edit (0: none).
        self.nearby = (Nearby(split.texts, check_count(nearest), cached=self._fresh_browse_outputs)
                       if self._browse is not None and nearest else None)
        self._before: list[tuple[Any, int, torch.Tensor]] = []  # (kept edit, concept, its browse logits before)
        self._saved = list(clf.interventions)  # the edits the model folder holds
        self._previewed: tuple[tuple, Any] | None = None  # (request, model version), the preview's plan

    def _fresh_browse_outputs(self, clf: Classifier, k: int):
        """Concept k's outputs on the browse split if they are the model's as it is now, else None."""
        outputs, fresh = self._browse.logits.kept(clf, k)
        return outputs if fresh else None

    def settle(self, timeout: float = 600.0) -> None:
        """Wait until the browse split's predictions are those of the model now (scripts, tests)."""
        if self._browse is not None:
            self._browse.settle(timeout)

    # ---------------------------------------------------------------- reads

    def model(self) -> dict[str, Any]:
        clf = self.clf
        subnet = subnetworks(clf, heatmaps=False)
        info = {
            "kind": clf.config.kind, "backbone": clf.config.backbone, "path": str(clf.path) if clf.path else None,
            "labels": list(clf.schema.labels),
            "concepts": {c: list(v) for c, v in zip(clf.schema.concepts, clf.schema.concept_values)},
            "version": self.version, "edits": len(clf.interventions), "max_text": MAX_TEXT, "methods": list(METHODS),
            "signed_methods": [m for m in METHODS if SIGNED[m]], "revision": clf.revision,
            "split": {"name": self.split_name, "n": len(self.split) if self.split is not None else 0},
            "guard": None if self.guard is None else self.guard.describe(),
            "sparsity": {c: 1.0 - v["kept"] for c, v in subnet["concepts"].items()},
            "jaccard": subnet["jaccard"], "ceiling": self.ceiling, "best_dev": clf.meta.get("best_dev"),
            "annotations": None if self.annotations is None else {
                "path": str(self.annotations.path), "n": len(self.annotations.rows)},
            "unsaved": self._unsaved(), "pending": False,
        }
        if self._browse is not None:
            logits, info["pending"] = self._browse.current()
            info["scores"] = evaluate_predictions(self.split, clf.schema, clf.task_logits(logits).argmax(-1).numpy(),
                                                  predicted_values(logits))
        return info

    def examples(self, only: str = "all", concept: str | None = None, sort: str = "index", descending: bool = False,
                 offset: int = 0, limit: int = 50, rows: list[int] | None = None) -> dict[str, Any]:
        """A page of the browse split (``only``, ``concept``, ``sort``), or with ``rows`` those rows
        in that order: what a page shows again after an edit without reordering under the user."""
        if self._browse is None:
            return {"total": 0, "rows": [], "version": self.version, "pending": False}
        schema, split = self.clf.schema, self.split
        if only not in ("all", "mistakes"):
            raise ApiError(400, f"only: expected 'all' or 'mistakes', got {only!r}")
        if concept is not None and concept not in schema.concepts:
            raise ApiError(400, f"concept: unknown {concept!r}; the model's concepts are {list(schema.concepts)}")
        if sort not in SORTS:
            raise ApiError(400, f"sort: expected one of {list(SORTS)}, got {sort!r}")
        _check_page(offset, limit)
        if rows is not None and (len(rows) > MAX_LIMIT or not all(0 <= i < len(split) for i in rows)):
            raise ApiError(400, f"rows: at most {MAX_LIMIT} row numbers in [0, {len(split)})")
        logits, pending = self._browse.current()
        task = self.clf.label_probabilities(self.clf.task_logits(logits))
        probs = [o.logits.softmax(-1) for o in logits]
        pred = np.stack([p.argmax(-1).numpy() for p in probs], axis=1)  # (n, K)
        label = task.argmax(-1).numpy()
        ks = [schema.concepts.index(concept)] if concept else list(range(len(schema.concepts)))
        wrong_concepts = pred[:, ks] != split.concepts[:, ks]
        keep = np.ones(len(split), bool)
        if only == "mistakes":
            keep = wrong_concepts.any(1) | (label != split.labels) if not concept else wrong_concepts.any(1)
        index = np.flatnonzero(keep)
        confidence = (task.max(-1).values.numpy() if not concept
                      else probs[ks[0]].max(-1).values.numpy())
        if sort == "confidence":
            index = index[np.argsort(confidence[index], kind="stable")]
        if descending:
            index = index[::-1]
        page = index[offset: offset + limit] if rows is None else np.asarray(rows, dtype=int)
        found = []
        for i in page:
            found.append({
                "index": int(i), "text": split.texts[i], "label": schema.labels[split.labels[i]],
                "predicted": schema.labels[label[i]], "confidence": float(confidence[i]),
                "concepts": {c: {"true": schema.concept_values[k][split.concepts[i, k]],
                                 "predicted": schema.concept_values[k][pred[i, k]],
                                 "probability": float(probs[k][i, pred[i, k]])}
                             for k, c in enumerate(schema.concepts)},
            })
        total = int(index.size) if rows is None else len(rows)
        return {"total": total, "rows": found, "version": self.version, "pending": pending}

    def explain(self, body: dict[str, Any]) -> dict[str, Any]:
        text = self._text(body)
        method = body.get("method", "grad")
        if method not in METHODS:
            raise ApiError(400, f"method: expected one of {list(METHODS)}, got {method!r}")
        e = explain(self.clf, text, method, subnetwork_level=False)
        return {**e.to_dict(subnetworks=False), "version": self.version}

    def subnetworks(self) -> dict[str, Any]:
        return {**subnetworks(self.clf, heatmaps=True), "version": self.version}

    def history(self) -> dict[str, Any]:
        """The kept edits, oldest first, each marked ``saved`` when the model folder holds it."""
        saved = self._saved_prefix()
        return {"edits": [{**e.to_json(), "saved": i < saved} for i, e in enumerate(self.clf.interventions)],
                "unsaved": self._unsaved(), "version": self.version}

    def _saved_prefix(self) -> int:
        """How many of the kept edits, from the first, are those the model folder holds."""
        n = 0
        for mine, saved in zip(self.clf.interventions, self._saved):
            if mine is not saved:
                break
            n += 1
        return n

    def _unsaved(self) -> bool:
        return not (self._saved_prefix() == len(self.clf.interventions) == len(self._saved))

    # ---------------------------------------------------------------- an annotated file

    def _annotations(self) -> AnnotationFile:
        if self.annotations is None:
            raise ApiError(404, "no annotated file: start the explorer with --annotations FILE --concepts TOML")
        return self.annotations

    def annotation_rows(self, concept: str | None = None, offset: int = 0, limit: int = 50) -> dict[str, Any]:
        annotations = self._annotations()
        _check_page(offset, limit)
        return {**annotations.page(concept, offset, limit), "version": self.version}

    def fix_annotation(self, body: dict[str, Any]) -> dict[str, Any]:
        """Write a person's value into the annotated file (the model is not touched)."""
        annotations = self._annotations()
        try:
            fixed = annotations.fix(body.get("index"), body.get("concept"), body.get("value"))
        except FileChanged as e:
            raise ApiError(409, str(e)) from None
        return {"fixed": fixed, "version": self.version}

    # ---------------------------------------------------------------- corrections

    def preview(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._correct(body, persist=False)

    def keep(self, body: dict[str, Any]) -> dict[str, Any]:
        self._check_version(body)
        return self._correct(body, persist=True)

    def undo(self, body: dict[str, Any]) -> dict[str, Any]:
        self._check_version(body)
        if not self.clf.interventions:
            raise ApiError(400, "nothing to undo: no kept edits")
        edit = undo(self.clf)
        if self._before and self._before[-1][0] is edit:  # the undo is bit-exact: so are its predictions
            _, k, logits = self._before.pop()
            self._browse.logits.put(self.clf, k, logits)
        self.version += 1
        if self._browse is not None:
            self._browse.refresh()
        return {"undone": edit.to_json(), **self.history()}

    def save(self, body: dict[str, Any]) -> dict[str, Any]:
        self._check_version(body)
        if self.clf.path is None:
            raise ApiError(400, "this model was not loaded from a folder; there is nowhere to save it")
        edits = len(self.clf.interventions)
        if not self._unsaved():  # nothing to write: no new revision
            return {"saved": False, "path": str(self.clf.path), "revision": self.clf.revision, "edits": edits,
                    "message": f"nothing new to save: revision {self.clf.revision} of {self.clf.path} already "
                               f"holds these {edits} edits", "version": self.version}
        try:
            path = self.clf.save()
        except ValueError as e:  # another process saved the folder since it was loaded
            raise ApiError(409, str(e)) from None
        self._saved = list(self.clf.interventions)
        return {"saved": True, "path": str(path), "revision": self.clf.revision, "edits": edits,
                "version": self.version}

    def reload(self, body: dict[str, Any]) -> dict[str, Any]:
        """Read the model folder again (its latest revision), dropping edits kept here and not saved."""
        self._check_version(body)
        if self.clf.path is None:
            raise ApiError(400, "this model was not loaded from a folder; there is nothing to reload")
        self.clf = load(self.clf.path, device=self.clf.device)
        if self.guard is not None:  # its caches belong to the old model
            self.guard = dataclasses.replace(self.guard)
        self._saved, self._before = list(self.clf.interventions), []
        self.version += 1
        if self._browse is not None:
            self._browse.refresh()
        return {"path": str(self.clf.path), "revision": self.clf.revision, "edits": len(self.clf.interventions),
                "version": self.version}

    def _correct(self, body: dict[str, Any], persist: bool) -> dict[str, Any]:
        text = self._text(body)
        schema = self.clf.schema
        concept, value, label = body.get("concept"), body.get("value"), body.get("label")
        if concept not in schema.concepts:
            raise ApiError(400, f"concept: unknown {concept!r}; the model's concepts are {list(schema.concepts)}")
        values = schema.concept_values[schema.concepts.index(concept)]
        if value not in values:
            raise ApiError(400, f"value: {value!r} is not a value of {concept!r} ({list(values)})")
        if label is not None and label not in schema.labels:
            raise ApiError(400, f"label: {label!r} is not one of {list(schema.labels)}")
        k = schema.concepts.index(concept)
        before, fresh = self._browse.logits.kept(self.clf, k) if self._browse is not None else (None, False)
        # A Keep of the correction just previewed on this model keeps that very edit (no second search).
        request = (text, concept, value, label, self.version)
        plan = self._previewed[1] if persist and self._previewed and self._previewed[0] == request else None
        r = self.clf.intervene(text, concept, value, label=label, persist=persist, guard=self.guard,
                               max_ratio=self.max_ratio, plan=plan, nearby=None if persist else self.nearby)
        self._previewed = None if persist else (request, r.plan)
        if r.persisted:
            self.version += 1
            if fresh:
                self._before.append((self.clf.interventions[-1], k, before))
            if self._browse is not None:
                self._browse.refresh()
        elif fresh:  # a preview, or an edit the guard refused: the mask is back bit for bit
            self._browse.logits.put(self.clf, k, before)
        return {"result": r.to_dict(), "oracle": oracle(self.clf, text, {concept: value}),
                "edits": len(self.clf.interventions), "version": self.version}

    def _check_version(self, body: dict[str, Any]) -> None:
        version = body.get("version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise ApiError(400, "version: required (an integer: the model version this request was made against)")
        if version != self.version:
            raise ApiError(409, f"stale version {version}: the model is at version {self.version} "
                                "(another edit or undo came first); reload and retry")

    def _text(self, body: dict[str, Any]) -> str:
        if "index" in body and body["index"] is not None:
            i = body["index"]
            if self.split is None or not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < len(self.split):
                n = len(self.split) if self.split is not None else 0
                raise ApiError(400, f"index: expected a row number in [0, {n}), got {i!r}")
            return self.split.texts[i]
        text = body.get("text")
        if not isinstance(text, str) or is_blank(text):
            raise ApiError(400, "text: required, a string with something to read (not only spaces or invisible "
                                "characters), or give index, a row of the split")
        if len(text) > MAX_TEXT:
            raise ApiError(413, f"text: {len(text)} characters, the explorer takes at most {MAX_TEXT}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ApiError(400, f"text: character {e.start + 1} is not a valid Unicode character (a lone "
                                "surrogate); send the text as UTF-8") from None
        return text


def _check_page(offset: int, limit: int) -> None:
    if offset < 0 or not 1 <= limit <= MAX_LIMIT:
        raise ApiError(400, f"offset must be >= 0 and limit in [1, {MAX_LIMIT}]")


def create_app(explorer: Explorer, *, host: str = "127.0.0.1", token: str | None = None,
               max_body: int = MAX_BODY) -> AccessControl:
    """The ASGI app: the page at ``/``, its files under ``/static``, the API under
    ``/api``, behind :class:`~sparsecbm.access.AccessControl` for a server bound to
    ``host`` (``token``: required on every request when given)."""

    def locked(fn: Callable[..., dict[str, Any]], *, with_body: bool = False, query: bool = False):
        async def endpoint(request: Request) -> JSONResponse:
            try:
                args: list[Any] = [await _json_body(request)] if with_body else []
                kwargs = _query(request) if query else {}
                return JSONResponse(await _run_locked(explorer, fn, *args, **kwargs))
            except ApiError as e:
                return JSONResponse({"error": str(e), "version": explorer.version}, status_code=e.status)
            except (ValueError, TypeError, KeyError) as e:  # bad input found deeper down; the model is unchanged
                return JSONResponse({"error": str(e), "version": explorer.version}, status_code=400)
        return endpoint

    async def index(request: Request) -> FileResponse:
        return FileResponse(STATIC / "index.html")

    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": f"{request.method} {request.url.path}: {exc.detail}"}, status_code=exc.status_code)

    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); the model is unchanged"}, status_code=500)

    routes = [
        Route("/", index),
        Route("/api/model", locked(explorer.model)),
        Route("/api/examples", locked(explorer.examples, query=True)),
        Route("/api/subnetworks", locked(explorer.subnetworks)),
        Route("/api/history", locked(explorer.history)),
        Route("/api/annotations", locked(explorer.annotation_rows, query=True)),
        Route("/api/annotations/fix", locked(explorer.fix_annotation, with_body=True), methods=["POST"]),
        Route("/api/explain", locked(explorer.explain, with_body=True), methods=["POST"]),
        Route("/api/preview", locked(explorer.preview, with_body=True), methods=["POST"]),
        Route("/api/keep", locked(explorer.keep, with_body=True), methods=["POST"]),
        Route("/api/undo", locked(explorer.undo, with_body=True), methods=["POST"]),
        Route("/api/save", locked(explorer.save, with_body=True), methods=["POST"]),
        Route("/api/reload", locked(explorer.reload, with_body=True), methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error, Exception: server_error})
    return AccessControl(app, hosts=allowed_hosts(host), token=token, max_body=max_body)


async def _json_body(request: Request) -> dict[str, Any]:
    """The request body as a JSON object (AccessControl has already bounded its size)."""
    raw = await request.body()
    try:
        body = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ApiError(400, "the request body is not UTF-8") from None
    except RecursionError:
        raise ApiError(400, "the request body nests too deeply; send a flat JSON object") from None
    except ValueError as e:
        raise ApiError(400, f"the request body must be a JSON object ({e})") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return body


async def _run_locked(explorer: Explorer, fn, *args, **kwargs):
    from starlette.concurrency import run_in_threadpool

    def call():
        with explorer.lock, torch.inference_mode(False):
            return fn(*args, **kwargs)

    return await run_in_threadpool(call)


def _query(request: Request) -> dict[str, Any]:
    q = request.query_params
    out: dict[str, Any] = {}
    for key in ("only", "concept", "sort"):
        if key in q:
            out[key] = q[key] or None
    for key in ("offset", "limit"):
        if key in q:
            try:
                out[key] = int(q[key])
            except ValueError:
                raise ApiError(400, f"{key}: expected a whole number, got {q[key]!r}") from None
    if "descending" in q:
        out["descending"] = q["descending"] in ("1", "true", "yes")
    if q.get("rows"):
        try:
            out["rows"] = [int(i) for i in q["rows"].split(",")]
        except ValueError:
            raise ApiError(400, f"rows: expected row numbers separated by commas, got {q['rows']!r}") from None
    return out


def serve(explorer: Explorer, host: str = "127.0.0.1", port: int = 8765, token: str | None = None) -> None:
    """Run the explorer with uvicorn until interrupted (``token``: see :func:`create_app`)."""
    import uvicorn

    uvicorn.run(create_app(explorer, host=host, token=token), host=host, port=port, log_level="warning")
