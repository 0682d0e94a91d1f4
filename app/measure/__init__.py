"""Measuring code: what tells us how well the assistant does, never what runs for a user.

`bench` (speed and memory against llama.cpp's own floor), `evaluation` (accuracy against
baselines), `baselines`, `metrics`, `report` (tables and charts) and `chat_quality` (the
automatic chat checks). The runtime core in `app/` never imports this package; the CLI's
`eval`, `eval-chat` and `bench` commands and the scripts do.
"""
