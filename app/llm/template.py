"""The model's own chat template, rendered to tokens with the cacheable prefix marked.

Why not just render text and tokenize it: message contents must be tokenized with special tokens
OFF (a user typing "<|im_end|>" must not close a turn), while the template's own markers need them
ON; and the cache needs to know where the role's fixed start ends. So each message content is
replaced by a marker, the template rendered once, and the text between markers tokenized apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from app.errors import ModelLoadError
from app.llm.prompt import Prompt
from app.llm.tokens import Tokenizer

# Used when a GGUF carries no chat template: Qwen's ChatML.
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class ChatTemplate:
    """Renders messages with a model's Jinja chat template, straight to a `Prompt`."""

    def __init__(self, tokens: Tokenizer, template: str | None, *, eos: str, bos: str) -> None:
        template = template or CHATML_TEMPLATE
        self._tokens = tokens
        # Qwen2.5's template renders OpenAI tools; ChatML and Qwen1.5's cannot show any.
        self.supports_tools = "tools" in template
        specials = {"eos_token": eos, "bos_token": bos}
        self._full = Jinja2ChatFormatter(template=template, **specials)
        self._head = Jinja2ChatFormatter(template=template, add_generation_prompt=False, **specials)

    def render(
        self,
        messages: Sequence[dict[str, Any]],
        *,
        prefix_messages: int = 0,
        lead: str = "",
        base_messages: int = 0,
        tools: Sequence[dict[str, Any]] = (),
        reply_start: str = "",
    ) -> Prompt:
        """Render messages with the model's own chat template, ready for the assistant's turn.

        The first `prefix_messages` messages (system prompt, few-shot turns) form the cacheable
        prefix. When only the final message follows them, the opening of its turn and `lead`,
        the fixed text its content starts with (a role template's part before {text}), join the
        prefix too, so each new text costs only its own tokens and the template's tail.
        Message contents are tokenized with special tokens OFF, so text such as "<|im_end|>"
        typed by a user stays text and can never close a turn or forge a role.
        `base_messages` marks a shorter start of the prefix that other prefixes share (a chat
        role's system prompt before its retrieved examples): the engine keeps it too.
        `tools` (OpenAI function specs) go to the template's tools section, other message keys
        (an assistant turn's `tool_calls`) to the template as they are; both are template text,
        so the caller checks they hold no control-token text (app/roles/tools.py). `reply_start` is
        text the assistant's turn is made to begin with (a forced tool call's opening tag).
        """
        # An empty content gets no marker: templates test it ("if message.content").
        markers = [
            f"\x00{index}\x00" if message["content"] else ""
            for index, message in enumerate(messages)
        ]
        placeholders = [
            {**message, "content": marker}
            for message, marker in zip(messages, markers, strict=True)
        ]
        extra = {"tools": list(tools)} if tools else {}
        full = self._full(messages=placeholders, **extra).prompt
        boundary = -1
        if prefix_messages:
            head = self._head(messages=placeholders[:prefix_messages], **extra).prompt
            boundary = len(head) if full.startswith(head) else -1

        tokens: list[int] = []
        prefix_len = base_len = 0
        position = 0
        for index, (message, marker) in enumerate(
            [*zip(messages, markers, strict=True), ({"content": ""}, None)]
        ):
            if marker == "":  # nothing to find: its template text joins the next segment
                continue
            at = full.find(marker, position) if marker else len(full)
            if at < 0:
                raise ModelLoadError(
                    "The model's chat template dropped a message; use another model."
                )
            segment = full[position:at]
            if position <= boundary <= at:  # the prefix ends inside this template segment
                tokens += self._tokens.tokenize(segment[: boundary - position], special=True)
                prefix_len = len(tokens)
                segment = segment[boundary - position :]
            tokens += self._tokens.tokenize(segment, special=True)
            if index == base_messages and 0 < base_messages < prefix_messages:
                base_len = len(tokens)
            content = message["content"]
            final = marker is not None and marker == markers[-1]
            only_final_follows = prefix_len > 0 and prefix_messages == len(messages) - 1
            if lead and final and only_final_follows and content.startswith(lead):
                tokens += self._tokens.tokenize(lead)
                prefix_len = len(tokens)
                content = content[len(lead) :]
            tokens += self._tokens.tokenize(content) if marker else []
            position = at + len(marker or "")
        tokens += self._tokens.tokenize(reply_start, special=True)
        return Prompt(tokens=tokens, prefix_len=prefix_len, base_len=min(base_len, prefix_len))
