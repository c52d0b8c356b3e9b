"""Ray job entrypoint for the whole quickstart pipeline.

ray job submit --working-dir . -- python jobs/quickstart.py
"""

from mlops_ray.cli import main

if __name__ == "__main__":
    import sys

    main(["quickstart", *sys.argv[1:]])
