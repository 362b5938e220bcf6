"""Writes the save-format-1 model folders in tests/golden/format1/ and the predictions that
code made of them (tests/test_checkpoint_formats.py loads them with today's code).

Format 1 is sparsecbm before 0.2.0 (the model one flat module). The fixture was written
with that code, from a worktree of commit 19e43fc; run it again only to remake it:

    git worktree add /tmp/format1 19e43fc
    PYTHONPATH=/tmp/format1/src .venv/bin/python tests/golden/write_format1.py
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

from sparsecbm.classifier import Classifier
from sparsecbm.data import Schema
from sparsecbm.model import ConceptBottleneckModel, ModelConfig

HERE = Path(__file__).parent / "format1"
WORDS = "the food was awful lovely some service prices and , .".split()
TEXTS = ["the food was awful and the service lovely , prices some .",
         "the food was lovely and the service lovely , prices awful ."]
SCHEMA = Schema(labels=("1", "2", "3", "4", "5"), concepts=("food", "service", "price"),
                concept_values=(("Negative", "Positive", "unknown"),) * 3)


def tokenizer() -> PreTrainedTokenizerFast:
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")


def write(name: str, **config) -> None:
    torch.manual_seed(0)
    backbone = BertModel(BertConfig(vocab_size=5 + len(WORDS), hidden_size=8, num_hidden_layers=1,
                                    num_attention_heads=2, intermediate_size=16, max_position_embeddings=32))
    model = ConceptBottleneckModel(backbone, ModelConfig(schema=SCHEMA, **config))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5)
        if model.masks is not None:
            for per in model.masks.values():
                for mask in per.values():
                    mask.copy_(torch.rand(mask.shape) < 0.6)
    if config.get("bottleneck") == "embedding":
        model.value_prototypes = torch.randn(9, config["embedding_dim"])
    clf = Classifier(model.eval(), tokenizer(), max_length=16)
    clf.save(HERE / name, overwrite=True)
    expected = {"predictions": [p.to_dict() for p in clf.predict(TEXTS)],
                "oracle": clf.oracle(TEXTS[0], {"food": "Positive"}) if config["kind"] != "standard" else None}
    (HERE / name / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    (HERE / name / ".sparsecbm.lock").unlink(missing_ok=True)


if __name__ == "__main__":
    shutil.rmtree(HERE, ignore_errors=True)
    write("sparsecbm-embedding-side", kind="sparsecbm", bottleneck="embedding", residual=2, embedding_dim=4)
    write("cbm-soft", kind="cbm", bottleneck="soft")
    write("standard", kind="standard")
