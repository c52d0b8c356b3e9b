"""Ray job entrypoint: `mlops-ray train`.

    ray job submit --working-dir . -- python jobs/train.py --config examples/quickstart.yaml

Thin: the logic lives in the mlops_ray package (installed on every node). Inside a
Ray job RAY_ADDRESS is set, so the job joins the cluster it was submitted to.
"""

import sys

from mlops_ray.cli import main

if __name__ == "__main__":
    main(["train", *sys.argv[1:]])
