"""The state-store seam: shared state (locks, caches, histories, checkpoints, records) behind one interface."""

from mlops_ray.state.store import LocalStateStore, StateStore, check_key

__all__ = ["LocalStateStore", "StateStore", "check_key"]
