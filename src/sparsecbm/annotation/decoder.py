"""Concept values from an instruct decoder asked yes/no questions (``--annotator smollm2``).

Each text is put in a chat prompt once ("Text: ..."); every question about it ("Does the text
talk about the food? Answer Yes or No.", 'Does the text say something like "The food was
delicious."? Answer Yes or No.') then
reuses that prompt's key/value cache, so a text costs one forward of its own tokens plus one
batched forward of the short questions. A question's answer is the log-odds of the next token
being "Yes" rather than "No": deterministic, no sampling.

The zero-label decision reads each answer against its median over the texts scored together (a
small decoder says "No" to nearly everything, so the raw odds would mark no concept mentioned):
a concept is mentioned when its topic question's centred odds are positive, and its value is the
one whose centred odds are highest. The task label is never read.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from .concept_file import ConceptFile, ConceptSpec
from .scoring import MIN_CENTRE, ConceptScores

_TEXT, _QUESTION = "\x00TEXT\x00", "\x00QUESTION\x00"
PROMPT = f"Text: {_TEXT}\n\nQuestion: {_QUESTION}"
YES_NO = " Answer Yes or No."


class YesNoDecoder:
    """``ask(texts, questions)`` -> (n, Q) log p("Yes") - log p("No") for each text and question;
    ``choose(texts, questions, answers)``: each question's allowed answers' log-probabilities."""

    def __init__(self, backbone: str = "smollm2-135m", *, max_length: int = 256, device: str = "cpu") -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from ..backbones import resolve

        path = resolve(backbone)
        self._setup(AutoModelForCausalLM.from_pretrained(path).to(device), AutoTokenizer.from_pretrained(path),
                    max_length)

    @classmethod
    def from_model(cls, model, tokenizer, *, max_length: int = 256) -> "YesNoDecoder":
        """A decoder over an already loaded causal LM (tests build tiny ones from a config)."""
        decoder = cls.__new__(cls)
        decoder._setup(model, tokenizer, max_length)
        return decoder

    def _setup(self, model, tokenizer, max_length: int) -> None:
        self.model, self.tokenizer, self.max_length = model.eval(), tokenizer, max_length
        if tokenizer.chat_template:
            rendered = tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}], tokenize=False,
                                                     add_generation_prompt=True)
        else:
            rendered = PROMPT + "\nAnswer:"
        self._head, rest = rendered.split(_TEXT)
        self._middle, self._tail = rest.split(_QUESTION)

    def answer_tokens(self, answers: list[str]) -> list[int]:
        """The first token of each answer; a clear error where two answers share it."""
        ids = [self.tokenizer.encode(word, add_special_tokens=False)[:1] for word in answers]
        if not all(ids) or len({i[0] for i in ids}) < len(ids):
            raise ValueError(f"answers {answers} do not start with distinct tokens of the decoder's vocabulary")
        return [i[0] for i in ids]

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def prompt_ids(self, text: str, question: str) -> list[int]:
        """The whole prompt of one text and question, as ``choose`` feeds it in two parts."""
        return self._ids(self._head) + self._ids(text)[: self.max_length] + self._ids(self._middle + question + self._tail)

    def ask(self, texts: list[str], questions: list[str], *, progress: bool = False) -> np.ndarray:
        logp = self.choose(texts, [q + YES_NO for q in questions], [["Yes", "No"]] * len(questions), progress=progress)
        return np.stack([lp[:, 0] - lp[:, 1] for lp in logp], 1) if logp else np.zeros((len(texts), 0), np.float32)

    @torch.inference_mode()
    def choose(self, texts: list[str], questions: list[str], answers: list[list[str]], *,
               progress: bool = False) -> list[np.ndarray]:
        """Per question q, (n, len(answers[q])) log-probabilities of each allowed answer's first token."""
        if not questions:
            return []
        device = self.model.device
        answer_ids = [torch.tensor(self.answer_tokens(a), device=device) for a in answers]
        head = self._ids(self._head)
        suffixes = [self._ids(self._middle + q + self._tail) for q in questions]
        width = max(map(len, suffixes))
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        # Questions padded on the right: causal attention keeps a question's last token blind to its padding.
        suffix = torch.tensor([s + [pad] * (width - len(s)) for s in suffixes], device=device)
        suffix_mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in suffixes], device=device)
        last = torch.tensor([len(s) - 1 for s in suffixes], device=device)
        rows = torch.arange(len(questions), device=device)
        out = [np.zeros((len(texts), len(a)), dtype=np.float32) for a in answers]
        for i, text in enumerate(tqdm(texts, desc="asking the decoder", unit="text", disable=not progress)):
            prefix = torch.tensor([head + self._ids(text)[: self.max_length]], device=device)  # prompt_ids' first part
            cache = self.model(input_ids=prefix, use_cache=True).past_key_values
            cache.batch_repeat_interleave(len(questions))
            n = prefix.shape[1]
            logits = self.model(
                input_ids=suffix, past_key_values=cache, use_cache=True,
                attention_mask=torch.cat([torch.ones(len(questions), n, dtype=suffix_mask.dtype, device=device),
                                          suffix_mask], 1),
                position_ids=(n + torch.arange(width, device=device)).expand(len(questions), -1),
            ).logits[rows, last].float().log_softmax(-1)
            for q, ids in enumerate(answer_ids):
                out[q][i] = logits[q, ids].cpu().numpy()
        return out


def questions(spec: ConceptSpec) -> list[str]:
    """Concept ``spec``'s questions: its topic, then one per mentioned value (its first phrase)."""
    topic = spec.about[0] if spec.about else spec.name
    return [f"Does the text talk about {topic}?",
            *(f'Does the text say something like "{phrases[0]}"?' for _, phrases in spec.phrases)]


def score_texts_decoder(texts: list[str], concept_file: ConceptFile, decoder: YesNoDecoder, *,
                        progress: bool = False) -> list[ConceptScores]:
    """Score every concept of ``concept_file`` on ``texts`` by asking ``decoder`` (one
    :class:`ConceptScores` per concept, as :func:`~sparsecbm.annotation.score_texts`)."""
    asked = [questions(spec) for spec in concept_file.concepts]
    odds = decoder.ask(texts, [q for qs in asked for q in qs], progress=progress)
    scores, start = [], 0
    for qs in asked:
        part = odds[:, start:start + len(qs)].astype(np.float64)
        start += len(qs)
        centred = part - np.median(part, 0) if len(texts) >= MIN_CENTRE else part
        mention, by_value = centred[:, 0], centred[:, 1:]
        mentioned = mention > 0
        values = np.where(mentioned, by_value.argmax(1), by_value.shape[1])
        p_mention = 1.0 / (1.0 + np.exp(-mention))
        polarity = np.exp(by_value - by_value.max(1, keepdims=True))
        polarity /= polarity.sum(1, keepdims=True)
        confidence = np.where(mentioned, p_mention * polarity.max(1), 1.0 - p_mention)
        features = np.concatenate([part, centred, np.eye(by_value.shape[1] + 1)[values]], 1)
        scores.append(ConceptScores(values=values.astype(np.int64), confidence=confidence.astype(np.float32),
                                    evidence=tuple("" for _ in texts), features=features.astype(np.float32)))
    return scores
