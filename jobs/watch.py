"""Ray job entrypoint: the long-running trigger watcher (`mlops-ray pipeline watch`).

    ray job submit --no-wait --working-dir . -- python jobs/watch.py --config examples/quickstart.yaml
    ray job stop <submission id>      # SIGTERM: the watcher finishes its tick and stops

Thin: the logic lives in mlops_ray.pipeline.watch.
"""

import sys

from mlops_ray.cli import main

if __name__ == "__main__":
    main(["pipeline", "watch", *sys.argv[1:]])
