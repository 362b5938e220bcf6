"""Keep and Undo in the browser on whichever sparsecbm is imported, timed as benchmarks.serve
times today's page, to compare with the explorer before issue 38 (commit a26a555), whose page
said "explained ..." when a keep was done. Run the old code from a worktree:

    git worktree add /tmp/before a26a555
    PYTHONPATH=/tmp/before/src python -m benchmarks.experiments.keep_undo_before MODEL_DIR OUT.json
"""
import json
import sys

import httpx

import sparsecbm
from benchmarks.harness import machine, write_results
from benchmarks.serve import keep_undo_in_browser, start_server
from sparsecbm.data import dataset_from_spec
from sparsecbm.explorer import Explorer

model, out = sys.argv[1], sys.argv[2]
print(f"sparsecbm from {sparsecbm.__file__}")
clf = sparsecbm.load(model)
dev = dataset_from_spec(clf.data_spec)["dev"].head(500)
server, base = start_server(Explorer(clf, dev, "cebab dev"))
with httpx.Client(base_url=base, timeout=300) as http:
    rows = http.get("/api/examples", params={"only": "mistakes", "limit": 200}).json()["rows"]
corrections = [{"index": r["index"], "concept": c, "value": v["true"], "label": r["label"]}
               for r in rows for c, v in r["concepts"].items() if v["true"] != v["predicted"]]
server.should_exit = True
result = {"machine": machine(), "sparsecbm": sparsecbm.__file__, "model": model, "browse_n": len(dev),
          "command": f"PYTHONPATH=... python -m benchmarks.experiments.keep_undo_before {model} {out}",
          "in_browser": keep_undo_in_browser(model, 500, corrections, 8, finished=("explained", "undone"))}
write_results(out, result)
print(json.dumps(result, indent=1))
