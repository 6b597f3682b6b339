"""Data: the data sets (real and synthetic), their batches, and the task that scores them."""

from prune_env.data.datasets import DataBundle, Split, load_data
from prune_env.data.task import Task, get_task

__all__ = ["DataBundle", "Split", "Task", "get_task", "load_data"]
