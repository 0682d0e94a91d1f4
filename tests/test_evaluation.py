"""The evaluation harness: data errors by line, interleaved runs, report files, baselines."""

import json

import pytest

from app.errors import InputError
from app.measure import evaluation, report
from app.measure.baselines import snownlp, tfidf_lr
from tests.conftest import ROOT, run_cli, write


def test_labelled_csv_and_jsonl(tmp_path):
    csv_path = write(tmp_path / "d.csv", "text,label\n很好,正面\n很差,负面\n")
    jsonl_path = write(
        tmp_path / "d.jsonl",
        '{"text": "很好", "label": "正面"}\n\n{"text": "差", "label": "负面"}\n',
    )
    assert [e.label for e in evaluation.load_labelled(csv_path)] == ["正面", "负面"]
    assert [(e.line, e.text) for e in evaluation.load_labelled(jsonl_path)] == [
        (1, "很好"),
        (3, "差"),
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("text,mood\n好,正面\n", r"missing column\(s\) \['label'\]"),
        (
            "text,label\n好,正面\n,负面\n还行,中性\n",
            "line 3: empty text; line 4: unknown label '中性'",
        ),
    ],
)
def test_data_errors_name_the_lines(tmp_path, content, message):
    with pytest.raises(InputError, match=message):
        evaluation.load_labelled(write(tmp_path / "d.csv", content))


def test_bad_jsonl_line(tmp_path):
    with pytest.raises(InputError, match="line 2: invalid JSON"):
        evaluation.load_labelled(
            write(tmp_path / "d.jsonl", '{"text": "好", "label": "正面"}\n{nope\n')
        )


def test_run_interleaves_and_summarises():
    examples = [
        evaluation.Example(i, t, g)
        for i, (t, g) in enumerate([("好", "正面"), ("差", "负面"), ("坏", "负面")])
    ]
    calls = []

    def always_positive(text):
        calls.append(("pos", text))
        return "正面", 0.9

    def keyword(text):
        calls.append(("kw", text))
        return ("正面", 0.8) if "好" in text else ("负面", 0.8)

    results = evaluation.run(examples, {"pos": always_positive, "kw": keyword})
    assert calls[2:6] == [("pos", "好"), ("kw", "好"), ("pos", "差"), ("kw", "差")]  # after warm-up
    gold = [e.label for e in examples]
    by_name = {r.name: r.summary(gold) for r in results}
    assert by_name["kw"]["accuracy"] == 1.0
    assert by_name["pos"]["accuracy"] == pytest.approx(1 / 3)
    assert by_name["pos"]["confusion"] == [[1, 0], [2, 0]]


def test_report_writes_markdown_chart_and_json(tmp_path):
    result = evaluation.MethodResult("m", ["正面", "负面"], [0.9, 0.6], [10.0, 30.0], 1.5, 400.0)
    summary = result.summary(["正面", "正面"])
    written = report.write(tmp_path, "T", "ctx", [summary], {"data": "d"})
    text = written["report"].read_text(encoding="utf-8")
    assert "| m | 50.0% |" in text and "![chart](chart.png)" in text
    assert written["chart"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(written["json"].read_text(encoding="utf-8"))["methods"][0]["p50_ms"] == 20.0


def test_tfidf_baseline_learns_from_its_training_file(tmp_path):
    rows = (
        ["text,label"]
        + [f"真好用{i},正面" for i in range(20)]
        + [f"太差劲{i},负面" for i in range(20)]
    )
    predict = tfidf_lr(write(tmp_path / "train.csv", "\n".join(rows) + "\n"))
    assert predict("真好用啊")[0] == "正面" and predict("太差劲了")[0] == "负面"


def test_snownlp_baseline():
    predict = snownlp()
    label, confidence = predict("这家酒店太棒了，服务很好")
    assert label == "正面" and 0.5 <= confidence <= 1.0


@pytest.mark.parametrize("method", ["allinone", "published", "fullpass"])
def test_llm_methods_run_the_chosen_label_role(fake_assistant, monkeypatch, method):
    asked = []
    prompt_for = fake_assistant.prompt_builder.prompt_for  # every label role's prompt
    monkeypatch.setattr(
        fake_assistant.prompt_builder,
        "prompt_for",
        lambda role, text: asked.append(role.name) or prompt_for(role, text),
    )
    fake_assistant.engine.forget = lambda: None
    evaluation.build_method(method, assistant=fake_assistant, role="mood")("还行吧")
    assert asked == ["mood"]
    evaluation.build_method(method, assistant=fake_assistant)("还行吧")
    assert asked == ["mood", "sentiment"]


def test_a_text_role_is_refused_before_any_row(fake_assistant):
    with pytest.raises(InputError, match="'assistant' writes free text; eval needs a label role"):
        evaluation.build_method("allinone", assistant=fake_assistant, role="assistant")


def test_unknown_method_is_refused():
    with pytest.raises(InputError, match="Unknown method"):
        evaluation.build_method("bert")


@pytest.mark.model
def test_real_eval_run_on_a_small_slice(tmp_path, model_path):
    """The whole harness, the default methods, on 12 dev rows: files written, figures sane."""
    out = tmp_path / "report"
    result = run_cli(
        "eval",
        str(ROOT / "data" / "reviews_dev.csv"),
        "--limit",
        "12",
        "--out",
        str(out),
        "--model",
        str(model_path),
        timeout=900,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads((out / "results.json").read_text(encoding="utf-8"))
    methods = {m["method"]: m for m in data["methods"]}
    assert set(methods) == {"allinone", "published", "article", "tfidf_lr", "snownlp"}
    for m in methods.values():
        assert 0.0 <= m["accuracy"] <= 1.0 and m["n"] == 12
        assert m["peak_rss_mb"] > 10 and m["cold_start_s"] > 0
    assert methods["allinone"]["peak_rss_mb"] > methods["tfidf_lr"]["peak_rss_mb"] / 10
    assert methods["allinone"]["accuracy"] >= 0.6
    assert (out / "chart.png").is_file() and "| allinone |" in result.stdout
