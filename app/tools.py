"""The old import path of tool calls, kept so code written against it still runs."""

from app.roles.tools import Tool, ToolCall, split_tool_calls

__all__ = ["Tool", "ToolCall", "split_tool_calls"]
