"""The explorer's browse split: every concept's predictions on it, kept fresh in the
background after an edit, and the one lock over the model that requests share.

A kept edit changes one concept's subnetwork, so every row's value of that concept
may change; re-predicting the split while the user waits took seconds. Instead
:class:`BrowseSplit` serves the predictions it has (marked ``pending`` when some
are the previous model's) and recomputes the stale concepts in a thread, one chunk
of texts at a time, holding the :class:`ModelLock` only for a chunk and giving way
to every request that waits for it.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Callable, Sequence

import torch

from .interventions import SplitLogits
from .outputs import ConceptOutputs

if TYPE_CHECKING:
    from .classifier import Classifier

REFRESH_GRACE = 0.5  # seconds the refresh lets pass after an edit: the page's own requests come first
STEP_ASIDE = 0.005  # seconds between looks at the waiting count


class ModelLock:
    """One lock over the model that counts who waits for it (``with lock: ...``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = threading.Lock()
        self.waiting = 0

    def __enter__(self) -> "ModelLock":
        with self._count:
            self.waiting += 1
        try:
            self._lock.acquire()
        finally:
            with self._count:
                self.waiting -= 1
        return self

    def __exit__(self, *exc) -> None:
        self._lock.release()

    def step_aside(self) -> None:
        """Wait while a request waits for the lock (background work calls this between its steps)."""
        while self.waiting:
            time.sleep(STEP_ASIDE)


class BrowseSplit:
    """Every concept's outputs on ``texts`` for the model ``model()`` returns now (it may be
    replaced, e.g. reloaded), kept fresh by a background thread."""

    def __init__(self, texts: Sequence[str], lock: ModelLock, model: Callable[[], Classifier]) -> None:
        self.logits = SplitLogits(texts)
        self.lock, self.model = lock, model
        self._thread: threading.Thread | None = None

    def current(self) -> tuple[list[ConceptOutputs], bool]:
        """Every concept's outputs, and whether some are the previous model's (then the
        background refresh is running). Call with the lock held."""
        clf, outputs, pending = self.model(), [], False
        for k in range(len(clf.schema.concepts)):
            kept, fresh = self.logits.kept(clf, k)
            if kept is None:  # never computed (at start): compute now
                kept, fresh = self.logits.concept(clf, k), True
            outputs.append(kept)
            pending |= not fresh
        if pending:
            self.refresh()
        return outputs, pending

    def refresh(self) -> None:
        """Start recomputing the stale concepts in the background (unless it runs already)."""
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="browse-refresh", daemon=True)
            self._thread.start()

    def settle(self, timeout: float = 600.0) -> None:
        """Wait until the predictions are those of the model now (scripts, tests)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        time.sleep(REFRESH_GRACE)
        done = object()
        while True:
            with self.lock:
                clf = self.model()
                stale = self.logits.stale(clf)
                if not stale:
                    return
                steps = self.logits.refresh_steps(clf, stale[0])
            while True:
                self.lock.step_aside()
                with self.lock, torch.inference_mode(False):
                    if self.model() is not clf or next(steps, done) is done:  # replaced, or finished
                        break
