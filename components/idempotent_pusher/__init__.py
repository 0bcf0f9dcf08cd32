"""A Pusher executor that does not push the same SavedModel twice."""
from components.idempotent_pusher.executor import Executor, find_pushed_version

__all__ = ['Executor', 'find_pushed_version']
