"""All-in-One: one small quantized chat LLM, many jobs, fully offline.

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
from app.roles.assistant import Assistant, Turn, Verdict

__all__ = [
    "AllInOneError",
    "Assistant",
    "DownloadError",
    "InputError",
    "InputTooLong",
    "ModelLoadError",
    "ModelNotFound",
    "PromptsError",
    "Turn",
    "UnknownRole",
    "Verdict",
]
