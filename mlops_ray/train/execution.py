"""Execution policy: how a training run uses the cluster (pure; no Ray import).

Measured on 2 cores (README, benchmarks/train.py): Ray Train v2 *local mode*
(``num_workers=0``: the training function runs in the driver) costs ~1.1x plain
XGBoost, while worker mode pays ~8-12 s of fixed start-up per fit. So:

* single-node cluster -> local mode with all the node's CPUs as XGBoost threads;
* multi-node cluster  -> one worker per node, each with all of that node's CPUs
  (data-parallel XGBoost; the start-up cost is small next to the work);
* ``model.execution`` / ``num_workers`` / ``cpus_per_worker`` in config override;
* ``model.device``: ``auto`` trains XGBoost on GPUs (``device: cuda``, one GPU per worker) when the
  nodes it would use have GPUs, else on CPUs; ``cuda`` insists (an error without GPUs); ``cpu`` never.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ExecutionPlan:
    mode: str  # "local" or "distributed"
    num_workers: int  # 0 in local mode
    cpus_per_worker: float
    nthread: int
    reason: str
    device: str = "cpu"  # XGBoost's device: "cpu" or "cuda" (one GPU per worker, or the driver's in local mode)


def choose_execution(
    node_cpus: list[float],
    execution: str = "auto",
    num_workers: int | None = None,
    cpus_per_worker: float | None = None,
    node_gpus: list[float] | None = None,
    device: str = "auto",
) -> ExecutionPlan:
    """Decide local vs distributed training from the alive nodes' CPU (and GPU) counts.

    Args:
        node_cpus: total CPUs of each alive node (worker-capable), e.g. ``[2.0]``.
        execution: ``auto`` | ``local`` | ``distributed`` (config ``model.execution``).
        node_gpus: GPUs of the same nodes (None or zeros: none).
        device: ``auto`` | ``cpu`` | ``cuda`` (config ``model.device``).

    Raises:
        ValueError: an unknown mode or device, no nodes, or ``device="cuda"`` without enough GPUs.
    """
    plan = _choose_cpu_plan(node_cpus, execution, num_workers, cpus_per_worker)
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"unknown device {device!r}; use auto, cpu or cuda")
    gpu_nodes = sum(1 for g in (node_gpus or []) if g >= 1)
    needed = max(1, plan.num_workers)  # local mode: the driver's node
    if device == "cpu" or (device == "auto" and gpu_nodes < needed):
        return plan
    if gpu_nodes < needed:
        raise ValueError(
            f"model.device is cuda but {gpu_nodes} alive node(s) have a GPU and the plan needs {needed} "
            "(one per worker); add GPU nodes or set model.device: auto"
        )
    why = plan.reason + ("; GPUs on the nodes: XGBoost device cuda" if device == "auto" else "; device cuda configured")
    return ExecutionPlan(plan.mode, plan.num_workers, plan.cpus_per_worker, plan.nthread, why, "cuda")


def _choose_cpu_plan(
    node_cpus: list[float], execution: str, num_workers: int | None, cpus_per_worker: float | None
) -> ExecutionPlan:
    if not node_cpus:
        raise ValueError("no alive Ray nodes with CPUs")
    if execution not in ("auto", "local", "distributed"):
        raise ValueError(f"unknown execution {execution!r}")
    if execution == "local" or (execution == "auto" and len(node_cpus) == 1 and num_workers is None):
        threads = max(1, int(max(node_cpus)))
        why = "single-node cluster: local mode avoids worker start-up" if execution == "auto" else "configured"
        return ExecutionPlan("local", 0, float(threads), threads, why)
    n = num_workers or len(node_cpus)
    cpw = cpus_per_worker or max(1.0, float(int(min(node_cpus) if n <= len(node_cpus) else sum(node_cpus) / n)))
    why = (
        "multi-node cluster: one worker per node with all its CPUs"
        if execution == "auto" and num_workers is None
        else "configured"
    )
    return ExecutionPlan("distributed", n, cpw, max(1, int(cpw)), why)
