"""Heads trained on this machine: where they live, and how a role finds the one for its model.

Why in the roles layer: a head reads one model's hidden states (app/roles/head.py), so a role
whose shipped head is another model's takes the head `allinone train-head` wrote for the loaded
model (app/jobs/training.py). The training job writes these files and the roles read them, so
the lookup sits here, below both. Heads go to the per-user data folder, keyed by model and role,
never into site-packages.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from app.roles.head import Head, load_head
from app.roles.prompts import Role, RoleBook

TRAIN_LABELS = ("正面", "负面")  # the labels of the rows that ship for train-head
SECONDS_PER_ROW = 0.25  # measured here: 2,000 rows in 8 min 14 s (2 cores, the 0.5B model)


def user_heads_dir() -> Path:
    """Heads trained on this machine: $XDG_DATA_HOME/allinone/heads (~/.local/share/...)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "allinone" / "heads"


def user_head_path(model_name: str, role: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", model_name).strip("-").lower() or "model"
    return user_heads_dir() / slug / f"{role}.json"


def train_command(role: str) -> str:
    minutes = max(1, round(2000 * SECONDS_PER_ROW / 60))
    return f"allinone train-head --role {role} (about {minutes} minutes for 2,000 rows on 2 cores)"


def retrain_hint(role: Role) -> str:
    """How to get `role` a head for the loaded model: train-head for roles with the bundled
    rows' labels, else the role's own ratings (the reply judge)."""
    if set(role.labels) <= set(TRAIN_LABELS):
        return train_command(role.name)
    return f"python scripts/train_reply_judge.py --role {role.name} (from a checkout)"


def find_user_head(model_name: str, role: Role) -> Head | None:
    """The head this machine trained for `role` on `model_name`, if any and still valid for the
    role's prompt and labels; a stale one is ignored (the caller warns with the command)."""
    path = user_head_path(model_name, role.name)
    if not path.is_file():
        return None
    head = load_head(path, f"{path}")
    if head.labels != role.labels or head.fingerprint != role.fingerprint():
        return None
    return head


def with_user_heads(roles: RoleBook, model_name: str) -> RoleBook:
    """`roles` with the heads trained on this machine for `model_name` swapped in wherever
    the shipped head is another model's (or missing)."""
    heads = dict(roles.heads)
    for name, role in roles.roles.items():
        if role.head and (name not in heads or heads[name].model != model_name):
            found = find_user_head(model_name, role)
            if found is not None:
                heads[name] = found
    return roles.model_copy(update={"heads": heads})
