"""A new job is a YAML entry: a topic classifier with its own labels, no code change."""

import pytest

from app.roles.assistant import Assistant
from app.roles.prompts import load_roles
from tests.conftest import copy_prompts, run_cli, shipped_prompts_text

pytestmark = pytest.mark.model

TOPIC_ROLE = """
  topic:
    description: 新闻主题分类
    system: 你是新闻编辑。判断文本属于哪个主题，只回答主题名。
    template: "文本：{text}\\n主题："
    output:
      kind: labels
      labels: [体育, 科技, 美食, 财经]
"""


@pytest.fixture
def prompts_with_topic(tmp_path):
    return copy_prompts(tmp_path, shipped_prompts_text() + TOPIC_ROLE)


@pytest.mark.parametrize(
    ("text", "topic"),
    [
        ("国足昨晚点球大战击败对手，晋级决赛。", "体育"),
        ("新款手机搭载自研芯片，人工智能算力翻倍。", "科技"),
        ("这家店的红烧肉肥而不腻，汤底鲜美。", "美食"),
        ("央行宣布降息，股市应声上涨，债券收益率下跌。", "财经"),
    ],
)
def test_topic_role_from_yaml_only(assistant, prompts_with_topic, text, topic):
    with_topic = Assistant(assistant.engine, load_roles(prompts_with_topic), assistant.settings)
    verdict = with_topic.run("topic", text)
    assert verdict.label == topic
    assert sum(verdict.probabilities.values()) == pytest.approx(1.0)


def test_topic_role_from_the_cli(prompts_with_topic, model_path):
    result = run_cli(
        "run",
        "topic",
        "湖人队主场大胜勇士队",
        "--prompts",
        str(prompts_with_topic),
        "--model",
        str(model_path),
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\t")[0] == "体育"
