"""The errors a user can fix, one type each.

The core raises these; the shells turn them into one line at the edge (the CLI into a message and
a non-zero exit code, the server into a 4xx body). Anything else escaping is a bug.
"""

from __future__ import annotations


class AllInOneError(Exception):
    """Base class: a problem the user can fix, with a message that says how."""

    exit_code = 1


class ModelNotFound(AllInOneError):
    """No GGUF file where one was asked for, or none downloaded yet."""

    exit_code = 2


class ModelLoadError(AllInOneError):
    """The file exists but llama.cpp cannot load it (not GGUF, truncated, corrupt)."""

    exit_code = 2


class DownloadError(AllInOneError):
    """A model could not be fetched or did not verify."""

    exit_code = 3


class PromptsError(AllInOneError):
    """prompts.yaml is missing, malformed or incomplete; the message names file, role and field."""

    exit_code = 4


class UnknownRole(AllInOneError):
    """A role name that prompts.yaml does not define."""

    exit_code = 4


class ClusterError(AllInOneError):
    """The Ray cluster cannot be reached, lacks what the job needs, or failed it."""

    exit_code = 6


class InputError(AllInOneError):
    """The input cannot be processed as given (empty, unreadable, wrong format)."""

    exit_code = 5


class InputTooLong(InputError):
    """The input does not fit in the model's context window."""


class SchemaError(InputError):
    """A JSON Schema (response format, tool parameters) that the grammar cannot enforce."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path or 'schema'}: {message}")
        self.path = path  # where in the schema, e.g. "properties.mood.minimum"
