"""Baselines to measure All-in-One against (optional extra: `pip install -e ".[eval]"`).

- `tfidf_lr`: the "specialised small model": character 1-3-gram TF-IDF + logistic regression,
  trained on reviews_train.csv (the only data we may train on).
- `snownlp`: SnowNLP's shipped sentiment model. Note: it was trained on review data similar to
  ours, so it plays on home ground.
Each returns a predict(text) -> (label, confidence) function.
- `article_chat`: the article's own chat method, the reply the chat role must beat in blind
  pairs (scripts/rate_replies.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from app.errors import InputError
from app.jobs.training import read_labelled_rows
from app.llm import Sampling
from app.roles.engine_like import EngineLike

Predict = Callable[[str], tuple[str, float]]
POSITIVE, NEGATIVE = "正面", "负面"


def _require(module: str) -> None:
    try:
        __import__(module)
    except ImportError:
        raise InputError(f'The baselines need {module}: pip install -e ".[eval]"') from None


def tfidf_lr(train_path: Path) -> Predict:
    """Train TF-IDF (char 1-3 grams) + logistic regression on the training file."""
    _require("sklearn")
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    texts, labels = read_labelled_rows(train_path)
    model = make_pipeline(
        TfidfVectorizer(analyzer="char", ngram_range=(1, 3), min_df=2, sublinear_tf=True),
        LogisticRegression(C=4.0, max_iter=2000),
    )
    model.fit(texts, labels)
    classes = list(model.classes_)

    def predict(text: str) -> tuple[str, float]:
        probabilities = model.predict_proba([text])[0]
        best = int(probabilities.argmax())
        return classes[best], float(probabilities[best])

    return predict


def snownlp() -> Predict:
    """SnowNLP's bundled sentiment classifier (P(positive) >= 0.5 -> 正面)."""
    _require("snownlp")
    from snownlp import SnowNLP

    def predict(text: str) -> tuple[str, float]:
        positive = float(SnowNLP(text).sentiments)
        return (POSITIVE, positive) if positive >= 0.5 else (NEGATIVE, 1 - positive)

    return predict


# The article's chat: its empathetic system prompt (the article prints only its opening, "你现在
# 是一位富有同理心的AI助手..."; the rest is the plainest wording of what it says the prompt asks),
# the message through the model's chat template, sampled at 0.7, up to 128 tokens, no guards.
ARTICLE_CHAT_PROMPT = "你现在是一位富有同理心的AI助手，请用温暖、自然的语言回应用户。"
ARTICLE_CHAT_TEMPERATURE, ARTICLE_CHAT_TOKENS = 0.7, 128


def article_chat(engine: EngineLike, text: str, seed: int) -> str:
    """The article's own chat method's reply to `text`: the simpler method ours must beat."""
    messages = [
        {"role": "system", "content": ARTICLE_CHAT_PROMPT},
        {"role": "user", "content": text},
    ]
    sampling = Sampling(
        temperature=ARTICLE_CHAT_TEMPERATURE, max_tokens=ARTICLE_CHAT_TOKENS, seed=seed
    )
    return "".join(engine.stream(engine.chat_prompt(messages), sampling)).strip()
