"""XGBoost on a GPU (``model.device``), where the machine has one.

This 2-core machine has no GPU; the device tool lends a GPU machine to some sessions only, where this
module runs as it is (``pytest tests/integration/test_gpu.py``). Elsewhere it is skipped with the
reason; the decision itself (auto -> cuda when the nodes training uses have GPUs, cuda refused
without them) is tested without a GPU in tests/unit/test_gate_policies.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from mlops_ray.config import TrainingSpec, config_from_dict
from mlops_ray.data.prepare import prepare_snapshot
from mlops_ray.errors import MlopsRayError
from mlops_ray.workspace import get_workspace

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _gpus() -> int:
    if shutil.which("nvidia-smi") is None:
        return 0
    out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    return sum(line.startswith("GPU ") for line in out.stdout.splitlines()) if out.returncode == 0 else 0


NO_GPU = "no GPU here (nvidia-smi finds none): XGBoost's device: cuda runs where a GPU machine is lent"


def _cfg(small_config, device: str):
    base = small_config(rows=4000)
    return config_from_dict(
        {
            "data": base.data.model_dump(mode="json"),
            "registry": {"model_name": "gpu-model"},
            "model": {"num_boost_round": 30, "early_stopping_rounds": None, "device": device},
        }
    )


@pytest.mark.skipif(_gpus() > 0, reason="this machine has a GPU: the refusal below cannot happen")
def test_cuda_without_a_gpu_is_a_clear_error(ray_session, small_config):
    from mlops_ray.context import Context
    from mlops_ray.train.run import train_model

    cfg = _cfg(small_config, "cuda")
    snap = prepare_snapshot(cfg.data, get_workspace(), engine="local").snapshot
    with pytest.raises(MlopsRayError, match=r"model.device is cuda but 0 alive node"):
        train_model(Context.create(cfg, workspace=get_workspace()), TrainingSpec.from_config(cfg), snap)


@pytest.mark.skipif(_gpus() == 0, reason=NO_GPU)
def test_auto_trains_on_the_gpu_and_matches_the_cpu_model(ray_session, small_config):
    import xgboost as xgb

    from mlops_ray.context import Context
    from mlops_ray.train.run import train_model

    cfg = _cfg(small_config, "auto")
    ctx = Context.create(cfg, workspace=get_workspace())
    snap = prepare_snapshot(cfg.data, get_workspace(), engine="local").snapshot
    gpu = train_model(ctx, TrainingSpec.from_config(cfg), snap, register=False)
    run = ctx.client.get_run(gpu.run_id)
    assert run.data.params["execution.device"] == "cuda"
    from mlops_ray.registry import tracking

    booster = tracking.load_pyfunc(ctx.tracking_uri, gpu.model_uri).unwrap_python_model().estimator
    assert isinstance(booster, xgb.Booster)
    assert json.loads(booster.save_config())["learner"]["generic_param"]["device"].startswith("cuda")
    cpu_cfg = _cfg(small_config, "cpu")
    cpu = train_model(ctx, TrainingSpec.from_config(cpu_cfg), snap, register=False)
    # hist on GPU and CPU build the same trees up to floating-point order: metrics agree closely
    assert abs(gpu.metrics["test_auc"] - cpu.metrics["test_auc"]) < 0.01
