"""The old import path of the Ray API, kept so code written against it still runs."""

from app.jobs.ray_classify import classify_dataset

__all__ = ["classify_dataset"]
