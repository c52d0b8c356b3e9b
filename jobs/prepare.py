"""Ray job entrypoint: prepare a dataset snapshot.

    ray job submit --working-dir . -- python jobs/prepare.py --config examples/quickstart.yaml

Thin: all logic lives in mlops_ray.data.prepare. Inside a Ray job, RAY_ADDRESS is
set by Ray, so the job joins the cluster it was submitted to.
"""

from mlops_ray.cli import main

if __name__ == "__main__":
    import sys

    main(["data", "prepare", *sys.argv[1:]])
