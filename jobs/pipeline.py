"""Ray job entrypoint: one continuous-training pipeline run (`mlops-ray pipeline run`).

    ray job submit --working-dir . -- python jobs/pipeline.py --config examples/quickstart.yaml [--trigger data]

Thin: the logic lives in mlops_ray.pipeline. Inside a Ray job RAY_ADDRESS is set, so every
step (Ray Data preparation, Ray Train/Tune) runs on the cluster the job was submitted to.
"""

import sys

from mlops_ray.cli import main

if __name__ == "__main__":
    main(["pipeline", "run", *sys.argv[1:]])
