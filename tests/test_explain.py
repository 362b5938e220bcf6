"""Explanations: what each level reports, and that it reports the right subnetwork."""

import json
import re

import pytest
import torch

from sparsecbm import Classifier
from sparsecbm.backbones import load_backbone
from sparsecbm.cli import main
from sparsecbm.data import Schema
from sparsecbm.explanations import METHODS, explain
from sparsecbm.model import ConceptBottleneckModel, ModelConfig
from sparsecbm.report import html_report, save_png
from sparsecbm.word_scores import words

from .conftest import TINY_SCHEMA

SCHEMA = Schema(**TINY_SCHEMA)
TEXT = "the food was unbelievably awful and the service lovely"


@pytest.mark.parametrize("method", METHODS)
def test_a_score_for_every_word_and_only_for_real_tokens(sparse_clf, method):
    enc = words(sparse_clf, TEXT)
    assert len(enc.input_ids[0]) > len(TEXT.split()) + 2  # "unbelievably" is several word pieces
    e = explain(sparse_clf, TEXT, method, steps=4)
    for c in e.concepts:
        assert [w.text for w in c.words] == TEXT.split()  # pieces merged, [CLS]/[SEP] absent
        assert all(TEXT[w.start : w.end] == w.text for w in c.words)
        assert any(w.score != 0 for w in c.words)
    assert not e.truncated


def test_truncated_text_is_flagged(sparse_clf):
    e = explain(sparse_clf, " ".join(["lovely"] * 60), "grad")
    assert e.truncated and len(e.concepts[0].words) == 30  # max_length 32 minus [CLS], [SEP]


def test_contributions_sum_to_the_label_logit_minus_bias(sparse_clf):
    e = explain(sparse_clf, TEXT, "grad")
    logits = sparse_clf.forward_texts([TEXT]).task_logits[0]
    y = SCHEMA.labels.index(e.label)
    assert sum(c.contribution for c in e.concepts) == pytest.approx(float(logits[y]) - e.bias, abs=1e-5)
    assert [abs(c.contribution) for c in e.concepts] == sorted((abs(c.contribution) for c in e.concepts), reverse=True)
    for c in e.concepts:
        assert sum(c.contributions.values()) == pytest.approx(c.contribution, abs=1e-6)
        assert c.value == max(c.activations, key=c.activations.get)


def test_concept_k_explanation_ignores_mask_j(sparse_clf):
    before = {c.name: c for c in explain(sparse_clf, TEXT, "grad_x_input").concepts}
    for mask in sparse_clf.model.masks["service"].values():
        mask.logical_not_()  # edit M_service only
    after = {c.name: c for c in explain(sparse_clf, TEXT, "grad_x_input").concepts}
    for name in ("food", "noise"):
        assert before[name].words == after[name].words and before[name].activations == after[name].activations
    assert before["service"].words != after["service"].words


def test_integrated_gradients_add_up_to_the_logit_change(sparse_clf):
    """Completeness: word scores sum to logit(text) - logit(baseline) as the path steps grow."""
    from sparsecbm.word_scores import token_scores

    enc = words(sparse_clf, TEXT)
    scores, logits = token_scores(sparse_clf, enc, 0, 1, "integrated_gradients", steps=200)
    pad = torch.where(enc.piece_word >= 0, sparse_clf.tokenizer.pad_token_id, enc.input_ids[0])
    with torch.no_grad():
        base = sparse_clf.model.concept_outputs(pad[None], enc.attention_mask, 0).logits[0, 1]
    assert scores.sum() == pytest.approx(float(logits.logits[0, 1] - base), rel=0.02, abs=1e-4)


def test_subnetwork_level_matches_the_masks(sparse_clf):
    e = explain(sparse_clf, TEXT, None)
    sub = e.subnetworks["concepts"]["food"]
    masks = sparse_clf.model.masks["food"]
    name = next(iter(masks))
    assert sub["layers"][name] == pytest.approx(float(masks[name].float().mean()))
    heat = torch.tensor(sub["heatmaps"][name])
    assert heat.shape[0] <= 16 and heat.shape[1] <= 16
    assert float(heat.mean()) == pytest.approx(float(masks[name].float().mean()), abs=0.05)
    assert set(e.subnetworks["jaccard"]) == {"food|service", "food|noise", "service|noise"}
    assert e.concepts[0].words == ()  # no token method asked for


def test_json_html_and_png_outputs(sparse_clf, tmp_path):
    e = explain(sparse_clf, "the <b>food</b> & service", "grad")
    d = json.loads(json.dumps(e.to_dict()))
    assert set(d) >= {"label", "probabilities", "concepts", "subnetworks", "method"}
    assert set(d["concepts"][0]) >= {"name", "value", "activation", "contribution", "tokens"}
    page = html_report(e)
    # Nothing is fetched: every src/href is inline data, no URL or CSS import anywhere.
    links = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', page)
    assert links and all(link.startswith("data:image/png;base64,") for link in links)
    assert not re.search(r"https?:|ftp:|@import|url\(", page, re.IGNORECASE)
    assert "&lt;" in page and "<b>food</b>" not in page  # the text is escaped
    save_png(e, tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_dense_cbm_explains_concepts_and_tokens_without_subnetworks(tiny_bert):
    backbone, tokenizer = load_backbone(str(tiny_bert))
    clf = Classifier(ConceptBottleneckModel(backbone, ModelConfig(kind="cbm", schema=SCHEMA)).eval(), tokenizer)
    e = clf.explain(TEXT)
    assert e.subnetworks is None and len(e.concepts) == 3 and len(e.concepts[0].words) == len(TEXT.split())


def test_bad_input(sparse_clf):
    with pytest.raises(ValueError, match="empty"):
        explain(sparse_clf, "   ")
    with pytest.raises(ValueError, match="method must be one of"):
        explain(sparse_clf, TEXT, "saliency")


def test_cli_explain_one_text_and_a_split(tmp_path, capsys, reviews, tiny_bert):
    data = ["--data", str(reviews["train"]), "--dev", str(reviews["dev"]), "--test", str(reviews["test"]),
            "--text-column", "text", "--label-column", "stars", "--concept-columns", "food,service,price"]
    out = tmp_path / "m"
    train_args = ["-q", "train", *data, "--model", "sparsecbm", "--backbone", str(tiny_bert), "--out", str(out),
                  "--epochs", "1", "--max-length", "32", "--prune-steps", "1", "--fisher-grads", "4",
                  "--fisher-batch-size", "4", "--block-size", "8", "--finetune-epochs", "0"]
    assert main(train_args) == 0
    capsys.readouterr()
    assert main(["-q", "explain", str(out), "   "]) == 2
    assert "the text to explain is empty" in capsys.readouterr().err
    assert main(["-q", "explain", str(out)]) == 2
    assert "give a text" in capsys.readouterr().err

    files = [str(tmp_path / n) for n in ("e.json", "e.html", "e.png")]
    assert main(["-q", "explain", str(out), "the food was lovely", "--json", files[0], "--html", files[1],
                 "--png", files[2]]) == 0
    assert "predicted label" in capsys.readouterr().out
    assert json.loads((tmp_path / "e.json").read_text())["concepts"][0]["tokens"][1]["text"] == "food"

    jsonl = tmp_path / "all.jsonl"
    assert main(["-q", "explain", str(out), *data, "--split", "test", "--jsonl", str(jsonl), "--max-examples", "5",
                 "--method", "integrated_gradients", "--steps", "3"]) == 0
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(5)) and rows[0]["method"] == "integrated_gradients"
    assert "subnetworks" not in rows[0]


@pytest.mark.parametrize("method, signed, legend", [
    ("grad", False, "a size with no sign"), ("grad_x_input", True, "green supports"),
    ("integrated_gradients", True, "green supports")])
def testword_colours_and_legend_follow_the_methods_sign(sparse_clf, method, signed, legend):
    """grad scores are norms (all >= 0): painting them green 'supporting' would be a false reading."""
    from sparsecbm.report import UNSIGNED, word_colour

    e = explain(sparse_clf, TEXT, method, steps=3)
    assert e.signed is signed and e.to_dict()["signed"] is signed
    page = html_report(e)
    assert legend in page and (("green supports" in page) is signed)
    if not signed:
        assert all(w.score >= 0 for c in e.concepts for w in c.words)
        assert word_colour(1.0, 1.0, signed)[:3] == word_colour(-1.0, 1.0, signed)[:3] == UNSIGNED
