"""How a worker patch that does not fit surfaces in a real Ray worker (mlops_ray.compat)."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.integration]


def test_an_actor_whose_module_cannot_be_patched_fails_to_start_with_the_patch_error(ray_session, tmp_path):
    """The import hook raises instead of warning: the actor dies with PatchError's message, which the
    CLI reports as its one error line."""
    ray = ray_session
    (tmp_path / "replica_like_module.py").write_text("def add_port_elsewhere(server, address):\n    pass\n")

    @ray.remote(num_cpus=0, max_restarts=0)
    class NeedsHardenedModule:
        def __init__(self, module_dir: str):
            import sys

            from mlops_ray import compat
            from mlops_ray.compat import ray_2_60

            sys.path.insert(0, module_dir)
            sys.meta_path.insert(0, compat._PatchOnImport({"replica_like_module": ray_2_60.loopback_replica_grpc}))
            import replica_like_module  # noqa: F401 - the import is what fails

        def ping(self) -> str:
            return "up"

    actor = NeedsHardenedModule.remote(str(tmp_path))
    with pytest.raises(ray.exceptions.RayActorError) as err:
        ray.get(actor.ping.remote(), timeout=120)
    assert "patch 'replica-grpc-loopback'" in str(err.value)

    from mlops_ray.cli import _user_error

    message = _user_error(err.value)
    assert message is not None and message.startswith("patch 'replica-grpc-loopback'"), str(err.value)[-2000:]
