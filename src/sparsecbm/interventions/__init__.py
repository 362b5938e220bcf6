"""Sparsity-based intervention: correct a concept by rewiring its mask (docs/interventions.md).

The backbone theta, projector psi and classifier phi never change; only
concept k's mask M_k does. One step on texts x_1..x_n with true values c_k:

1. G = dL_k / d(M_k * theta), summed over the texts, through subnetwork k,
   with L_k = CE(phi_k a_k + b, y) + gamma * CE(logits_k, c_k) (the model's
   one definition, at the gamma the masks were mined with; the task term only
   when the labels are known).
2. Rank the weights (``selection``):

   - ``taylor`` (default): by a first-order Taylor expansion in the mask bit,
     dropping kept weight q changes L_k by about ``-G_q theta_q`` and growing
     pruned weight q by about ``+G_q theta_q``. Drop the kept weights with the
     largest positive ``G theta``, grow the pruned ones with the most negative;
     a bit whose estimate would not lower the loss is never flipped.
   - ``paper``: saliency ``|G theta|``; drop the kept weights of lowest
     saliency, grow the pruned ones of highest (the paper's rule, blind to
     sign; kept to reproduce its Fig. 3).

3. Flip the first n of each ranking: n = round(ratio * #prunable weights), or
   with ``ratio="auto"`` the smallest n of a geometric ladder (1e-6 of the
   prunable weights, doubling, up to ``max_ratio``) that fixes every text of
   the batch (failing that, the one fixing the most, then of lowest loss).
   Sparsity is unchanged: as many bits are dropped as grown.
4. Re-predict; repeat up to ``steps`` times while a text is still wrong.

Edits are flat indices over the concatenation of the concept's prunable
weights (in ``model.masks[concept]`` order), so an edit can be undone bit for
bit. Persistent edits are logged on the classifier (``clf.interventions``) and
saved with it (``interventions.json`` + ``interventions.safetensors``). A
:class:`~sparsecbm.interventions.Guard` checks an edit on texts it did not see and
rolls it back when that concept's or the task's accuracy there drops.

The package, one job a module: ``results`` (what a correction did, a kept
edit), ``ranking`` (the rules, the auto ladder, flipping bits), ``gradients``
(gradients and curvature through a subnetwork), ``rewire`` (one correction:
``correct``, ``intervene``), ``oracle``, ``log`` (undo, save, load),
``split_logits`` (every concept's logits on a set of texts, kept until a
subnetwork changes), ``guard`` (texts an edit must not hurt), ``nearby`` (what an edit does to the
texts most like the corrected ones), ``protocols``
(the per-example and persistent protocols over a split) and ``curves`` (task
accuracy as concepts are set true; how much the concepts decide).
"""

from .guard import CAUTION, Guard, check_caution, check_tolerance
from .log import load_log, save_log, undo
from .nearby import Nearby
from .oracle import oracle, oracle_labels, what_if
from .ranking import AUTO, MAX_RATIO, SELECTIONS, EditSettings, check_max_ratio, check_ratio
from .results import CorrectionResult, Edit, InterventionResult
from .rewire import correct, intervene
from .split_logits import SplitLogits

# What users and the other floors use; the steps inside a correction (gradients, ranking,
# flipping bits) are public in their own modules for tests and benchmarks.
__all__ = [
    "AUTO", "CAUTION", "MAX_RATIO", "SELECTIONS", "CorrectionResult", "Edit", "EditSettings", "Guard", "InterventionResult",
    "Nearby", "SplitLogits",
    "check_caution", "check_max_ratio", "check_ratio", "check_tolerance", "correct", "intervene", "load_log", "oracle",
    "oracle_labels", "save_log", "undo", "what_if",
]
