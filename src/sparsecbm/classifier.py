"""The trained classifier a user holds: predict, evaluate, save and load.

A saved model is a folder::

    config.json          what the model is (kind, schema, backbone architecture,
                         max length), the data it was trained on, training settings
    model.safetensors    all weights (backbone and heads)
    masks.safetensors    SparseCBM only: each concept's mask, bit-packed
    prototypes.safetensors  embedding heads: each concept value's mean embedding
                         (what an intervention moves toward; heads.LabelHead.true_features)
    tokenizer/           the tokenizer
    train_log.jsonl      one line per epoch (loss, dev metrics)

Nothing is pickled; :func:`load` rebuilds the architecture from ``config.json``
and needs neither the original backbone files nor internet.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from safetensors.torch import load_model, save_model
from tqdm.auto import tqdm
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from . import calibration, explanations, interventions
from .backbones import backbone_from_config, prepare_tokenizer
from .cache import VersionedCache
from .data import Dataset, Schema, Split
from .data.batching import check_texts, iter_batches, truncated  # noqa: F401  (re-exported)
from .files import atomic_path, folder_lock, write_json
from .masks import load_masks, save_masks
from .metrics import evaluate_predictions
from .model import ConceptBottleneckModel, ModelConfig
from .model_folder import FORMAT, FORMAT_VERSION, disk_state, read_config
from .outputs import CBMOutput, ConceptOutputs
from .predictions import ConceptPrediction, Prediction  # noqa: F401  (re-exported)
from .pruning import mining_gamma

log = logging.getLogger(__name__)


class Classifier:
    """A trained Standard model or CBM with its tokenizer and settings."""

    def __init__(
        self,
        model: ConceptBottleneckModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        max_length: int = 128,
        data_spec: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.data_spec = data_spec or {}
        self.meta = meta or {}  # training settings and the selected epoch's dev scores
        self.path: Path | None = None  # the folder it was loaded from or last saved to
        self.revision = 0  # that folder's revision (config.json), bumped by every save
        self.interventions: list = []  # persisted mask edits (sparsecbm.interventions.Edit), oldest first
        # Derived data that explanations and interventions reuse, kept until the
        # tensors it was computed from change.
        self.cache = VersionedCache()

    def require_masks(self, purpose: str) -> None:
        """A ValueError, naming the folder and ``purpose``, unless this model has concept masks."""
        if self.model.masks is None:
            where = f"{self.path}: " if self.path else ""
            raise ValueError(f"{where}a {self.config.kind!r} model has no concept masks {purpose} "
                             "(train one with --model sparsecbm)")

    @property
    def config(self) -> ModelConfig:
        return self.model.config

    @property
    def schema(self) -> Schema:
        return self.model.config.schema

    @property
    def gamma(self) -> float:
        """The weight of the concept losses the model was trained with (5 when unknown)."""
        return float(self.meta.get("training", {}).get("gamma", 5.0))

    @property
    def mining_gamma(self) -> float:
        """The gamma of L_k its masks were mined with (``--mining-gamma``; the training gamma
        when not set, as before that flag existed). Corrections rewire with the same L_k."""
        return mining_gamma((self.meta.get("pruning") or {}).get("mining_gamma"), self.gamma)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def temperature(self) -> float:
        """What the label logits are divided by before the softmax (1 until :meth:`calibrate`)."""
        return float((self.meta.get("calibration") or {}).get("temperature", 1.0))

    def label_probabilities(self, task_logits: torch.Tensor) -> torch.Tensor:
        """Label probabilities from label logits: ``softmax(logits / temperature)``."""
        return (task_logits.float() / self.temperature).softmax(-1)

    def calibrate(self, split: Split, *, batch_size: int = 64, progress: bool = False) -> dict[str, Any]:
        """Fit the temperature on ``split`` (held-out texts: the dev split) by the NLL of its labels
        (:mod:`sparsecbm.calibration`); no prediction changes. Recorded in ``meta["calibration"]``
        (saved with the config) with the split's NLL and ECE before and after; returns that record."""
        logits = self.forward_texts(split.texts, batch_size=batch_size, progress=progress, desc="calibrate").task_logits
        t = calibration.fit_temperature(logits, split.labels)
        self.meta["calibration"] = {"temperature": t, "fitted_on": f"{split.source or 'a split'} ({len(split)} texts)",
                                    "before": calibration.scores(logits, split.labels, 1.0),
                                    "after": calibration.scores(logits, split.labels, t)}
        return self.meta["calibration"]

    @property
    def unfinished(self) -> str | None:
        """Why this model's training is incomplete (a run stopped before its last
        epoch left its best checkpoint so far), or None."""
        if self.meta.get("finished", True):
            return None
        # the phase's epochs: a SparseCBM's --sparse-epochs (saved since then), else the training --epochs
        done, epochs = self.meta.get("epochs_done"), self.meta.get("epochs", self.meta.get("training", {}).get("epochs"))
        where = (f"after epoch {done} of {epochs} (the best so far is saved)" if done != epochs
                 else "before its label head was trained")
        return f"training stopped {where}; continue it with the same train command and --resume"

    def to(self, device: str | torch.device) -> "Classifier":
        self.model.to(device)
        return self

    # ------------------------------------------------------------------ inference

    @torch.inference_mode()
    def forward_texts(
        self, texts: Sequence[str], *, batch_size: int = 64, progress: bool = False, desc: str = "predict"
    ) -> CBMOutput:
        """Logits for every text, in input order, on the CPU."""
        texts = check_texts(texts)
        was_training = self.model.training
        self.model.eval()
        # Longest first: batches of similar length waste little padding.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        task, concepts, features, index = [], [], [], []
        batches = iter_batches(self.tokenizer, texts, order, batch_size, self.max_length)
        total = (len(texts) + batch_size - 1) // batch_size
        try:
            for idx, batch in tqdm(batches, total=total, desc=desc, disable=not progress, leave=False):
                out = self.model(**{k: v.to(self.device) for k, v in batch.items()})
                task.append(out.task_logits.float().cpu())
                if out.concept_logits:
                    concepts.append(torch.cat(out.concept_logits, dim=1).float().cpu())
                if out.features:
                    features.append(torch.cat(out.features, dim=1).float().cpu())
                index.append(idx)
        finally:
            self.model.train(was_training)
        inverse = np.argsort(np.concatenate(index)) if index else np.zeros(0, dtype=np.int64)
        task_logits = torch.cat(task)[inverse] if task else torch.zeros(0, len(self.schema.labels))
        if not self.config.has_concepts:
            return CBMOutput(task_logits=task_logits)
        logits = torch.cat(concepts)[inverse] if concepts else torch.zeros(0, sum(self.model.concept_sizes))
        feats = ()
        sizes = self.model.head.feature_sizes
        if self.model.head.has_features:
            feats = torch.cat(features)[inverse] if features else torch.zeros(0, sum(sizes))
            feats = torch.split(feats, sizes, dim=1)
        return CBMOutput(
            task_logits=task_logits,
            concept_logits=torch.split(logits, self.model.concept_sizes, dim=1),
            activations=torch.sigmoid(logits),
            features=feats,
        )

    def task_logits(self, outputs: Sequence[ConceptOutputs]) -> torch.Tensor:
        """Task logits (C_y,) or (n, C_y), float32 on the CPU, from every concept's outputs
        (one text's or n texts'; ``model.concept_outputs``)."""
        with torch.inference_mode():
            return self.model.task_logits([o.to(self.device) for o in outputs]).float().cpu()

    def read_label(self, activations: torch.Tensor, features=(), *, side: bool = True) -> torch.Tensor:
        """Task logits (n, C_y), float32 on the CPU, of the label head reading these
        activations (n, sum C_k) and features (``CBMOutput.features``)."""
        dtype = next(self.model.head.parameters()).dtype  # a bfloat16 model reads bfloat16 (outputs come as float32)
        with torch.inference_mode():
            return self.model.head.read_label(activations.to(self.device, dtype),
                                              tuple(f.to(self.device, dtype) for f in features), side=side).float().cpu()

    def predict(self, texts: Sequence[str], *, batch_size: int = 64, progress: bool = False) -> list[Prediction]:
        """One :class:`Prediction` per text (label, label probabilities, concepts)."""
        texts = check_texts(texts)
        out = self.forward_texts(texts, batch_size=batch_size, progress=progress)
        cut = truncated(self.tokenizer, texts, self.max_length)
        label_probs = self.label_probabilities(out.task_logits).numpy()
        concept_probs = [logits.softmax(-1).numpy() for logits in out.concept_logits]
        schema = self.schema
        parts, alternatives = None, [{} for _ in texts]
        if self.config.has_concepts:
            with torch.inference_mode():
                parts = self.model.head.logit_parts(out.activations.to(self.device),
                                               tuple(f.to(self.device) for f in out.features))
            alternatives = interventions.what_if(self, out.activations, out.features)
        results = []
        for i in range(len(label_probs)):
            concepts = {}
            for k, (name, values) in enumerate(zip(schema.concepts, schema.concept_values)):
                if k < len(concept_probs):
                    p = concept_probs[k][i]
                    concepts[name] = ConceptPrediction(
                        value=values[int(p.argmax())], probs=dict(zip(values, map(float, p)))
                    )
            results.append(
                Prediction(
                    label=schema.labels[int(label_probs[i].argmax())],
                    label_probs=dict(zip(schema.labels, map(float, label_probs[i]))),
                    concepts=concepts,
                    truncated=cut[i],
                    what_if=alternatives[i],
                    **({} if parts is None else {
                        "concept_share": float(parts.share[i]),
                        "values_label": schema.labels[int(parts.values_label[i])],
                        "side": float(parts.side[i]) if self.config.residual else None}),
                )
            )
        return results

    def evaluate(
        self, data: Split | Dataset, split: str = "test", *, batch_size: int = 64, progress: bool = False
    ) -> dict[str, Any]:
        """Accuracy and macro-F1 (fractions) of the task and, for a CBM, each concept."""
        if isinstance(data, Dataset):
            self.check_schema(data.schema, data.name)
            data = data[split]
        return self.evaluate_outputs(data, self.forward_texts(data.texts, batch_size=batch_size, progress=progress,
                                                              desc="evaluate"))

    def evaluate_outputs(self, data: Split, out: CBMOutput) -> dict[str, Any]:
        """:meth:`evaluate` of outputs already computed for every text of ``data``, in order."""
        task_pred = out.task_logits.argmax(-1).numpy()
        concept_pred = out.predicted_values() if out.concept_logits else None
        return evaluate_predictions(data, self.schema, task_pred, concept_pred)

    def check_schema(self, schema: Schema, name: str) -> None:
        """Raise ValueError unless data of this schema fits the model."""
        mine = self.schema
        if schema.labels != mine.labels or (
            self.config.has_concepts
            and (schema.concepts, schema.concept_values) != (mine.concepts, mine.concept_values)
        ):
            raise ValueError(
                f"data {name!r} does not match the model: model labels {list(mine.labels)}, "
                f"concepts {mine.to_dict()['concepts']}; data labels {list(schema.labels)}, "
                f"concepts {schema.to_dict()['concepts']}"
            )

    def explain(self, text: str, method: str | None = "grad", **kwargs: Any):
        """Explain one prediction: concept, token and subnetwork levels.

        See :func:`sparsecbm.explanations.explain` (``method``: grad, grad_x_input,
        integrated_gradients or None; ``steps`` for integrated gradients)."""
        return explanations.explain(self, text, method, **kwargs)

    def intervene(self, text: str, concept: str, value: str, **kwargs: Any):
        """Correct ``concept`` to ``value`` on ``text`` by rewiring its mask (SparseCBM).

        ``ratio`` ("auto"), ``selection`` ("taylor"), ``steps`` (1), ``persist`` (False),
        ``label``, ``guard``: see
        :func:`sparsecbm.interventions.intervene`. Returns the before/after result."""
        return interventions.intervene(self, text, concept, value, **kwargs)

    def correct(self, texts: Sequence[str], concept: str, values, labels=None, **kwargs: Any):
        """Correct ``concept`` on several texts at once with one logged, undoable edit
        of its mask (SparseCBM): ``values`` per text (or one str for all), ``labels``
        optional. ``ratio`` ("auto"), ``selection`` ("taylor"), ``persist``, ``guard``:
        see :func:`sparsecbm.interventions.correct`."""
        return interventions.correct(self, texts, concept, values, labels, **kwargs)

    def undo(self):
        """Revert the last persisted intervention bit for bit; returns its record."""
        return interventions.undo(self)

    def oracle(self, text: str, corrections: dict[str, str]) -> dict[str, Any]:
        """Oracle intervention: the label once the corrected concepts' activations are set to the truth."""
        return interventions.oracle(self, text, corrections)

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | os.PathLike | None = None, *, overwrite: bool = False) -> Path:
        """Write the model folder; with no path, the folder it was loaded from. Masks and
        the intervention log included.

        The folder's lock is held throughout, so a concurrent load never sees it half
        written, and each file is written to a temporary name and renamed. A save
        into the folder this model came from is refused if another process saved
        there since (its revision moved on: load it again and redo the change);
        a save into another folder that holds a model needs ``overwrite=True``."""
        if path is None:
            if self.path is None:
                raise ValueError("this model was never saved or loaded: give a folder to save it to")
            path = self.path
        path = Path(path)
        with folder_lock(path):
            on_disk, same = self._check_revision(path)
            if on_disk is not None and not same and not overwrite:
                raise ValueError(f"{path}: already holds a model; choose another folder or overwrite it explicitly")
            path.mkdir(parents=True, exist_ok=True)
            with atomic_path(path / "model.safetensors") as tmp:
                save_model(self.model.weights_only(), str(tmp), metadata={"format": FORMAT})
            if self.model.masks is not None:
                save_masks(self.model.masks, path / "masks.safetensors")
                interventions.save_log(self, path)
            if self.config.has_concepts:
                self.model.head.save_prototypes(path)
            # Always: a folder retrained with another backbone must not keep the old tokenizer.
            with atomic_path(path / "tokenizer", is_dir=True) as tmp:
                self.tokenizer.save_pretrained(tmp)
            # config.json last: its presence marks a complete checkpoint.
            self.revision = (on_disk or 0) + 1
            self._write_config(path)
        self.path = path
        return path

    def save_config(self, path: str | os.PathLike, *, prototypes: bool = False) -> None:
        """(Re)write only ``config.json`` of a saved model folder (e.g. final training notes, a
        calibration) and, with ``prototypes``, the label head's value prototypes and shifts. The
        folder keeps its save format: its weights are not rewritten."""
        path = Path(path)
        with folder_lock(path):
            on_disk, _ = self._check_revision(path)
            if prototypes:
                self.model.head.save_prototypes(path)
            self.revision = (on_disk or 0) + 1
            self._write_config(path, disk_state(path).format_version)

    def _check_revision(self, path: Path) -> tuple[int | None, bool]:
        """(revision on disk, whether ``path`` is the folder this copy came from); a
        save there is refused if another process saved since this copy was loaded."""
        on_disk = disk_state(path).revision
        same = self.path is not None and self.path.exists() and path.exists() and path.samefile(self.path)
        if on_disk is not None and same and on_disk != self.revision:
            raise ValueError(f"{path}: saved by someone else since this copy was loaded (revision {on_disk}, "
                             f"this copy is based on {self.revision}); load it again and redo the change")
        return on_disk, same

    def _write_config(self, path: Path, format_version: int = FORMAT_VERSION) -> None:
        write_json(path / "config.json", {
            "format": FORMAT,
            "format_version": format_version,
            "revision": self.revision,
            "model": self.config.to_dict(),
            "backbone_config": self.model.backbone.config.to_dict(),
            "max_length": self.max_length,
            "data": self.data_spec,
            **self.meta,
        })


def load(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> Classifier:
    """Load a model folder written by ``train`` or :meth:`Classifier.save`. A damaged
    folder gets one ValueError (or FileNotFoundError) naming the file and what is wrong."""
    path = Path(path)
    config_path = path / "config.json"
    if not config_path.exists():
        what = "no such folder" if not path.exists() else "no config.json (not a saved sparsecbm model, or an unfinished one)"
        raise FileNotFoundError(f"{path}: {what}")
    # Normal tensors even when called under torch.inference_mode(): masks keep
    # version counters (the masked-weight caches depend on them).
    with torch.inference_mode(False), folder_lock(path, create=False):
        clf = _load_unlocked(path, config_path)
    return clf.to(device)


def _load_unlocked(path: Path, config_path: Path) -> Classifier:
    meta = read_config(config_path)
    try:
        config = ModelConfig.from_dict(meta.pop("model"))
        backbone = backbone_from_config(meta.pop("backbone_config"))
    except (TypeError, KeyError, ValueError, AttributeError) as e:
        raise ValueError(f"{config_path}: the model or backbone description is wrong ({type(e).__name__}: {e})") from None
    masks = load_masks(path / "masks.safetensors") if config.kind == "sparsecbm" else None
    try:
        model = ConceptBottleneckModel(backbone, config, masks)
    except ValueError as e:
        raise ValueError(f"{path}: masks.safetensors does not fit config.json: {e}") from None
    weights = path / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: missing; the model folder is incomplete")
    try:
        load_model(model.weights_only(meta["format_version"]), str(weights), strict=True)
    except RuntimeError as e:  # shapes or names that do not match config.json
        raise ValueError(f"{weights}: does not match config.json ({str(e).splitlines()[0]})") from None
    except Exception as e:  # safetensors' own error type: truncated or garbled
        raise ValueError(f"{weights}: damaged or not a safetensors file ({e})") from None
    tokenizer_dir = path / "tokenizer"
    if not tokenizer_dir.is_dir():
        raise FileNotFoundError(f"{tokenizer_dir}: missing; the model folder is incomplete")
    try:
        tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True))
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise ValueError(f"{tokenizer_dir}: cannot load the tokenizer ({e})") from None
    revision = int(meta.pop("revision", 0))
    meta.pop("format", None)
    meta.pop("format_version", None)
    clf = Classifier(
        model.eval(),
        tokenizer,
        max_length=meta.pop("max_length"),
        data_spec=meta.pop("data", {}),
        meta=meta,
    )
    if masks is not None:
        clf.interventions = interventions.load_log(path)
    if config.has_concepts:
        model.head.load_prototypes(path)
    clf.path, clf.revision = path, revision
    return clf
