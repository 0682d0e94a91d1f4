"""All-in-One: one small quantized chat LLM, many jobs, fully offline.

The public API, named here whichever package holds it (the layers: app/llm <- app/roles <-
app/jobs <- app/cli, app/server).

from app import Assistant
assistant = Assistant.load()
assistant.sentiment("今天又被老板骂了。")   # Verdict(label='负面', confidence=...)
"""

from app.errors import (
    AllInOneError,
    DownloadError,
    InputError,
    InputTooLong,
    ModelLoadError,
    ModelNotFound,
    PromptsError,
    UnknownRole,
)
from app.llm import Completion, Usage
from app.roles.assistant import Assistant, Turn, Verdict
from app.roles.conversations import Conversations
from app.roles.json_output import JsonFormat
from app.roles.store import Conversation, ConversationStore, StoredTurn
from app.roles.tools import Tool, ToolCall, split_tool_calls

__all__ = [
    "Conversation",
    "ConversationStore",
    "Conversations",
    "StoredTurn",
    "AllInOneError",
    "Assistant",
    "Completion",
    "DownloadError",
    "InputError",
    "InputTooLong",
    "JsonFormat",
    "ModelLoadError",
    "ModelNotFound",
    "PromptsError",
    "Tool",
    "ToolCall",
    "Turn",
    "UnknownRole",
    "Usage",
    "Verdict",
    "split_tool_calls",
]
