"""All-in-One: one small quantized chat LLM, many jobs, fully offline.

from app import Assistant
assistant = Assistant.load()
assistant.sentiment("今天又被老板骂了。")   # Verdict(label='负面', confidence=...)
"""

from app.dispatcher import Assistant, Turn, Verdict
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
