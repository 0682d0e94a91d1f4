"""The old import path of JSON output, kept so code written against it still runs."""

from app.roles.json_output import JsonFormat

__all__ = ["JsonFormat"]
