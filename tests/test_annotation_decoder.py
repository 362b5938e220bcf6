"""The decoder annotator (yes/no questions to an instruct decoder) and its combination with a
sentence encoder, on a tiny causal LM built from a config (the real SmolLM2 is a benchmark)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from sparsecbm import backbones
from sparsecbm.annotation import annotate
from sparsecbm.annotation.annotators import split_annotator
from sparsecbm.annotation.decoder import YesNoDecoder, questions, score_texts_decoder
from sparsecbm.cli import main

from .annotation_support import REVIEWS, BagOfWords


@pytest.fixture(scope="module")
def decoder() -> YesNoDecoder:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=30522, hidden_size=48, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, pad_token_id=0)
    return YesNoDecoder.from_model(LlamaForCausalLM(config), AutoTokenizer.from_pretrained(backbones.minilm_dir()))


def test_cached_answers_equal_one_forward_of_the_whole_prompt(decoder):
    texts = ["the soup was cold", "a long review about the friendly waiter and the noisy room"]
    qs = ["is the food good?", "is the waiter friendly? answer now", "loud?"]
    logp = decoder.choose(texts, qs, [["yes", "no"], ["yes", "no", "maybe"], ["1", "2"]])
    for i, text in enumerate(texts):
        for q, answers in enumerate([["yes", "no"], ["yes", "no", "maybe"], ["1", "2"]]):
            ids = torch.tensor([decoder.prompt_ids(text, qs[q])])
            with torch.no_grad():
                full = decoder.model(input_ids=ids).logits[0, -1].log_softmax(-1)
            expected = full[decoder.answer_tokens(answers)].numpy()
            assert np.allclose(logp[q][i], expected, atol=1e-4), (text, qs[q])
    odds = decoder.ask(texts, qs[:2])
    assert odds.shape == (2, 2)


def test_answers_must_start_with_distinct_tokens(decoder):
    with pytest.raises(ValueError, match="do not start with distinct tokens"):
        decoder.answer_tokens(["yes", "yes"])


def test_decoder_scores_have_a_question_per_value_and_allowed_values(decoder, concept_file):
    assert questions(concept_file.concepts[0]) == [
        "Does the text talk about the food?", 'Does the text say something like "the food was delicious"?',
        'Does the text say something like "the food was bland"?']
    texts = [t for t, _ in REVIEWS] * 12  # 36 texts: enough to read each answer against its median
    scores = score_texts_decoder(texts, concept_file, decoder)
    for k, s in enumerate(scores):
        assert s.values.shape == (36,) and set(s.values) <= set(range(len(concept_file.values(k))))
        assert ((0 <= s.confidence) & (s.confidence <= 1)).all() and s.features.shape[0] == 36
        # the same text gets the same answers wherever it stands in the file
        assert (s.values.reshape(12, 3) == s.values[:3]).all()


def test_combined_annotator_keeps_the_encoder_decision_and_calibrates_on_both(tmp_path, decoder, concept_file):
    texts = [t for t, _ in REVIEWS]
    alone = annotate(texts, concept_file, encoder=BagOfWords())
    both = annotate(texts, concept_file, annotator="minilm+smollm2", encoder=BagOfWords(), decoder=decoder)
    assert np.array_equal(alone.values, both.values)
    only = annotate(texts, concept_file, annotator="smollm2", decoder=decoder)
    assert only.values.shape == alone.values.shape


@pytest.mark.parametrize("name", ["minilm+mpnet", "smollm2+smollm2", "minilm+", ""])
def test_a_bad_annotator_name_is_refused(name):
    with pytest.raises(ValueError, match="annotator"):
        split_annotator(name)


def test_cli_refuses_a_bad_annotator_before_reading_anything(tmp_path, capsys, concept_file):
    code = main(["annotate", str(tmp_path / "missing.csv"), "--concepts", concept_file.source,
                 "--annotator", "minilm+mpnet"])
    assert code != 0 and "--annotator 'minilm+mpnet'" in capsys.readouterr().err
