"""Classifier models: a sequence-classification head over the MoE, one or several label sets.

A classifier is transformers' `...ForSequenceClassification` (for mistral4,
`Mistral4ForSequenceClassification`: the decoder, then one linear `score` head read at the
last real token), so any Hugging Face tool loads the exported directory. Several label
sets share that one head: its outputs are the sets' labels side by side, and the config
records which slice is which set (`forgeml_label_sets`) besides the plain
`id2label` ("category:returns"). A single-label set is a softmax over its slice, a
multi-label set an independent sigmoid per label.

    classifier = Classifier.load(model_dir)
    classifier.scores(["My parcel never came"])   # [{"category": {"shipping": 0.93, ...}}]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from forgeml.core.errors import InputError
from forgeml.models.classifier_config import LABEL_SETS_KEY, is_classifier
from forgeml.train.classify_data import LabelSet

MAX_INPUT_TOKENS = 8192


@dataclass(frozen=True)
class HeadLayout:
    """Where each label set's logits sit in the head's outputs."""

    sets: tuple[LabelSet, ...]

    @property
    def size(self) -> int:
        return sum(len(s.labels) for s in self.sets)

    def slices(self) -> list[tuple[LabelSet, slice]]:
        out, start = [], 0
        for label_set in self.sets:
            out.append((label_set, slice(start, start + len(label_set.labels))))
            start += len(label_set.labels)
        return out

    def config(self) -> dict[str, Any]:
        """The config fields a classifier directory carries (HF's and ours)."""
        id2label = {
            index: f"{label_set.name}:{label}"
            for index, (label_set, label) in enumerate(
                (s, label) for s in self.sets for label in s.labels
            )
        }
        single = len(self.sets) == 1 and not self.sets[0].multi_label
        return {
            "num_labels": self.size,
            "id2label": id2label,
            "label2id": {name: index for index, name in id2label.items()},
            "problem_type": "single_label_classification"
            if single
            else "multi_label_classification",
            LABEL_SETS_KEY: [s.to_dict() for s in self.sets],
        }

    def targets(self, labels: dict[str, list[str]]) -> list[float]:
        """A record's labels as the head's multi-hot target row."""
        row = [0.0] * self.size
        for label_set, where in self.slices():
            for label in labels.get(label_set.name, ()):
                row[where.start + label_set.labels.index(label)] = 1.0
        return row

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean over the sets: cross-entropy for single-label sets (rows that leave the
        set out are skipped), binary cross-entropy per label for multi-label sets."""
        losses = []
        for label_set, where in self.slices():
            part, target = logits[:, where].float(), targets[:, where]
            if label_set.multi_label:
                losses.append(torch.nn.functional.binary_cross_entropy_with_logits(part, target))
                continue
            given = target.sum(dim=1) > 0
            if given.any():
                losses.append(
                    torch.nn.functional.cross_entropy(part[given], target[given].argmax(dim=1))
                )
        return torch.stack(losses).mean() if losses else logits.sum() * 0.0

    def probabilities(self, logits: torch.Tensor) -> list[dict[str, dict[str, float]]]:
        """Per row: each set's labels with their probabilities."""
        rows: list[dict[str, dict[str, float]]] = [{} for _ in range(logits.shape[0])]
        for label_set, where in self.slices():
            part = logits[:, where].float()
            probs = part.sigmoid() if label_set.multi_label else part.softmax(dim=1)
            for row, values in zip(rows, probs.tolist(), strict=True):
                row[label_set.name] = dict(zip(label_set.labels, values, strict=True))
        return rows

    @staticmethod
    def of(config: Any) -> HeadLayout | None:
        sets = getattr(config, LABEL_SETS_KEY, None)
        return HeadLayout(tuple(LabelSet.from_dict(s) for s in sets)) if sets else None


class Classifier:
    """A classifier directory loaded for inference (eval mode, no gradients)."""

    def __init__(self, model: Any, tokenizer: Any, layout: HeadLayout, max_tokens: int) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.layout = layout
        self.max_tokens = max_tokens

    @classmethod
    def load(cls, directory: Path, max_tokens: int = 1024) -> Classifier:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from forgeml.models.sizes import load_pretrained

        if not is_classifier(directory):
            raise InputError(
                "not a classifier: its config has no label sets",
                path=directory,
                hint="train one with `forgeml train classify`",
            )
        model = load_pretrained(
            directory, AutoModelForSequenceClassification, "a classifier", torch.float32
        )
        model.eval()
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        layout = HeadLayout.of(model.config)
        assert layout is not None
        return cls(model, tokenizer, layout, min(max_tokens, MAX_INPUT_TOKENS))

    def encode(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return encode(self.tokenizer, texts, self.max_tokens)

    @torch.inference_mode()
    def scores(self, texts: list[str], batch_size: int = 16) -> list[dict[str, dict[str, float]]]:
        out: list[dict[str, dict[str, float]]] = []
        for start in range(0, len(texts), batch_size):
            batch = self.encode(texts[start : start + batch_size])
            logits = self.model(**batch).logits
            out.extend(self.layout.probabilities(logits))
        return out

    def token_counts(self, texts: list[str]) -> list[int]:
        return [len(ids[: self.max_tokens]) for ids in self.tokenizer(texts)["input_ids"]]


def encode(tokenizer: Any, texts: list[str], max_tokens: int) -> dict[str, torch.Tensor]:
    """Right-padded ids and mask: the head reads the last token that is not padding."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return pad_right([row[:max_tokens] for row in tokenizer(texts)["input_ids"]], pad)


def pad_right(rows: list[list[int]], pad: int) -> dict[str, torch.Tensor]:
    """Ids padded on the right to the longest row, and the attention mask (training and
    inference pad alike, so the head reads the same token)."""
    width = max(len(row) for row in rows)
    return {
        "input_ids": torch.tensor([row + [pad] * (width - len(row)) for row in rows]),
        "attention_mask": torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows]),
    }
