"""prompts.yaml validation: every mistake names the file, the role and the field."""

from pathlib import Path

import pytest
from llama_cpp import LlamaGrammar

from app.errors import PromptsError, UnknownRole
from app.roles.prompts import load_roles
from tests.conftest import ROOT, write

GOOD_ROLE = """
  sentiment:
    system: 判断情感。
    output: {kind: labels, labels: [正面, 负面]}
  assistant:
    system: 聊天。
    output: {kind: text}
"""


def roles_file(tmp_path: Path, roles: str, extra: str = "") -> Path:
    return write(tmp_path / "prompts.yaml", f"roles:{GOOD_ROLE}{roles}\n{extra}")


def test_shipped_prompts_load_with_both_jobs():
    book = load_roles(ROOT / "prompts.yaml")
    assert book.sentiment.labels == ("正面", "负面")
    assert not book.chat.is_classifier
    assert book.chat.steered_by == "mood"
    assert set(book.chat.tones) == {"正面", "负面", "中性"}
    assert book.chat.bank is not None and book.banks["assistant"].exchanges


def test_mood_role_is_the_sentiment_prompt_with_the_cue_kept_and_its_own_head():
    """The same system prompt and examples; mood keeps the "情感：" cue after the text, which
    everyday lines need, while the review role drops it for a shorter tail per text."""
    book = load_roles(ROOT / "prompts.yaml")
    mood, sentiment = book.get("mood"), book.sentiment
    assert (mood.system, mood.examples, mood.labels) == (
        sentiment.system,
        sentiment.examples,
        sentiment.labels,
    )
    assert mood.template == sentiment.template + "\n情感："
    assert (mood.head, sentiment.head) == ("heads/mood.json", "heads/sentiment.json")
    assert book.heads["mood"].weights.tolist() != book.heads["sentiment"].weights.tolist()


def test_grammar_allows_exactly_the_labels_and_parses_in_llama_cpp():
    role = load_roles(ROOT / "prompts.yaml").sentiment
    assert role.grammar() == 'root ::= "正面" | "负面"\n'
    LlamaGrammar.from_string(role.grammar(), verbose=False)  # raises if llama.cpp rejects it


def test_grammar_escapes_quotes_and_backslashes(tmp_path):
    path = roles_file(
        tmp_path, "  odd:\n    system: x\n    output: {kind: labels, labels: ['a\"b', 'c\\d']}"
    )
    grammar = load_roles(path).get("odd").grammar()
    assert grammar == 'root ::= "a\\"b" | "c\\\\d"\n'
    LlamaGrammar.from_string(grammar, verbose=False)


def test_template_renders_user_text_with_braces_untouched():
    role = load_roles(ROOT / "prompts.yaml").sentiment
    assert "{x} 好" in role.render("{x} 好")


@pytest.mark.parametrize(
    ("role_yaml", "expected"),
    [
        (
            "  topic:\n    system: x\n    output: {kind: labels, labels: [体育]}",
            "at least two labels",
        ),
        ("  topic:\n    system: x\n    output: {kind: labels, labels: [a, a]}", "unique"),
        ("  topic:\n    output: {kind: text}", "field 'system'"),
        (
            "  topic:\n    system: x\n    sytem: y\n    output: {kind: text}",
            "field 'sytem': unknown field",
        ),
        ("  topic:\n    system: x\n    template: no slot\n    output: {kind: text}", "{text}"),
        ("  topic:\n    system: x\n    output: {kind: words}", "field 'output.kind'"),
        (
            "  topic:\n    system: x\n    output: {kind: text}\n    generation: {temperature: 9}",
            "field 'generation.temperature'",
        ),
        (
            "  topic:\n    system: x\n    output: {kind: labels, labels: [a, b]}\n"
            "    examples: [{input: hi, output: c}]",
            "not one of the labels",
        ),
        (
            "  topic:\n    system: x\n    output: {kind: text}\n"
            "    steered_by: nobody\n    tones: {a: b}",
            "field 'steered_by'",
        ),
        (
            "  topic:\n    system: x\n    output: {kind: text}\n"
            "    steered_by: sentiment\n    tones: {开心: b}",
            "field 'tones'",
        ),
        (
            "  topic:\n    system: x\n    output: {kind: text}\n"
            "    steered_by: sentiment\n    examples: [{input: a, output: b, tone: 开心}]",
            "field 'examples.tone'",
        ),
        (
            "  topic:\n    system: x\n    output: {kind: text}\n    bank: {file: b.yaml}",
            "need 'steered_by'",
        ),
        (
            "  topic:\n    system: x\n    output: {kind: text}\n"
            "    steered_by: sentiment\n    bank: {file: missing.yaml}",
            "bank file not found",
        ),
        (
            "  topic:\n    system: x\n    output: {kind: text}\n"
            "    steered_by: sentiment\n    tones: {负面: {instruction: x, avoid: 3}}",
            "field 'tones.负面.avoid'",
        ),
    ],
)
def test_bad_role_names_file_role_and_field(tmp_path, role_yaml, expected):
    path = roles_file(tmp_path, role_yaml)
    with pytest.raises(PromptsError) as caught:
        load_roles(path)
    message = str(caught.value)
    assert str(path) in message
    assert "'topic'" in message
    assert expected in message


def test_invalid_yaml_reports_line(tmp_path):
    path = write(tmp_path / "p.yaml", "roles:\n  a: [unclosed\n  b: 1\n")
    with pytest.raises(PromptsError, match=r"line \d+"):
        load_roles(path)


def test_missing_file_says_how_to_point_elsewhere(tmp_path):
    with pytest.raises(PromptsError, match="--prompts"):
        load_roles(tmp_path / "nope.yaml")


def test_defaults_must_name_existing_roles(tmp_path):
    path = roles_file(tmp_path, "", "defaults: {chat: missing}")
    with pytest.raises(PromptsError, match="defaults.chat"):
        load_roles(path)


def test_unknown_role_lists_the_known_ones():
    book = load_roles(ROOT / "prompts.yaml")
    with pytest.raises(UnknownRole, match="assistant, mood, reply-judge, sentiment"):
        book.get("topic")
