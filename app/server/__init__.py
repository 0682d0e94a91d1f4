"""The local HTTP server shell (extra `server`): OpenAI-shaped routes over the Assistant."""
