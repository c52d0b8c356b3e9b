"""Reproducible tuning without a cluster: seeded sampling, the concurrency cap, ASHA in trial order.

``asha_decisions`` is checked against Ray's own ASHA bracket fed one trial at a time (the
reference that does not depend on timing), and against random interleavings of concurrent
trials: whatever order reports arrive in, the trials it stops, and so the winner, are the same.
"""

from __future__ import annotations

import numpy as np
import pytest

from mlops_ray.train.tune import (
    asha_decisions,
    asha_milestones,
    parse_search_space,
    rung_values,
    sample_configs,
    search_algorithm,
)

SPACE = parse_search_space(
    {
        "eta": {"loguniform": [0.01, 0.3]},
        "max_depth": {"randint": [3, 9]},
        "subsample": {"uniform": [0.6, 1.0]},
        "min_child_weight": {"quniform": [1, 10, 1]},
        "grow_policy": {"choice": ["depthwise", "lossguide"]},
    }
)


# ------------------------------------------------------------------ sampling
def test_the_same_seed_samples_the_same_configurations_in_the_same_order():
    a, b = sample_configs(SPACE, 8, seed=42), sample_configs(SPACE, 8, seed=42)
    assert a == b and len(a) == 8
    assert len({tuple(sorted(c.items())) for c in a}) == 8  # really sampled, not one config repeated
    assert sample_configs(SPACE, 8, seed=43) != a
    assert sample_configs(SPACE, 3, seed=42) == a[:3]  # trial i's config does not depend on num_samples


def test_grid_and_random_together_are_seeded_too():
    space = parse_search_space({"lambda": {"grid": [0.1, 10.0]}, "eta": {"uniform": [0.05, 0.3]}})
    a = sample_configs(space, 3, seed=7)
    assert a == sample_configs(space, 3, seed=7) and len(a) == 6
    assert [c["lambda"] for c in a] == [0.1, 10.0] * 3


def test_the_generator_caps_live_trials_at_max_concurrent():
    """Ray ignores TuneConfig.max_concurrent_trials next to a generator instance: the cap is the generator's."""
    from mlops_ray.train.tune import _noop_trainable, to_tune_space

    gen = search_algorithm(0, max_concurrent=2)
    gen.add_configurations({"x": {"run": _noop_trainable, "config": to_tune_space(SPACE), "num_samples": 4}})
    first, second = gen.next_trial(), gen.next_trial()
    assert first is not None and second is not None and gen.next_trial() is None
    gen.on_trial_complete(first.trial_id)
    assert gen.next_trial() is not None and gen.next_trial() is None


# ------------------------------------------------------------------ ASHA in trial order
def test_milestones_are_rays_rungs_below_max_t():
    assert asha_milestones(21, 3, 2) == [3, 6, 12]
    assert asha_milestones(24, 3, 2) == [3, 6, 12]  # 24 is only reached by the final report
    assert asha_milestones(4, 3, 2) == [3]
    assert asha_milestones(3, 3, 2) == []


def test_rung_values_take_the_report_at_each_milestone():
    rows = [(1, 0.5), (2, 0.6), (3, 0.7), (4, 0.71), (5, 0.72), (6, 0.8), (7, 0.9)]
    assert rung_values(rows, [3, 6, 12]) == [0.7, 0.8]
    assert rung_values(rows[:2], [3, 6, 12]) == []


def _ray_asha_one_at_a_time(trajectories, rf, maximize):
    """Reference: Ray's ASHA bracket, trials run to their end (or stop) one after the other."""
    from types import SimpleNamespace

    from ray.tune.schedulers.async_hyperband import _Bracket

    n_rungs = max([len(t) for t in trajectories] + [1])
    milestones = [1 + k for k in range(n_rungs)]  # one rung per report keeps the comparison 1:1
    bracket = _Bracket(min_t=1, max_t=n_rungs + 1, reduction_factor=rf, s=0)
    # Ray's rungs for min_t=1, rf: 1, rf, rf^2...; map our rung r to report rf**r instead
    bracket._rungs = [(m, {}) for m in reversed(milestones)]
    sign = 1.0 if maximize else -1.0
    out = []
    for i, traj in enumerate(trajectories):
        trial = SimpleNamespace(trial_id=f"t{i}")
        state = ("open", len(traj))
        for r, v in enumerate(traj):
            if bracket.on_result(trial, milestones[r], sign * v) == "STOP":
                state = ("stopped", r)
                break
        out.append(state)
    return out


def _trajectories(rng, n, rungs):
    out = []
    for _ in range(n):
        reached = int(rng.integers(0, rungs + 1))  # some trials end (early stopping) below the top rung
        base = rng.normal()
        out.append([float(base + 0.3 * r + rng.normal(scale=0.5)) for r in range(reached)])
    return out


@pytest.mark.parametrize("maximize", [True, False])
def test_asha_decisions_equal_rays_asha_run_one_trial_at_a_time(seed, maximize):
    rng = np.random.default_rng(seed)
    for _ in range(50):
        traj = _trajectories(rng, int(rng.integers(1, 12)), 4)
        rf = int(rng.choice([2, 3, 4]))
        got = asha_decisions(traj, [True] * len(traj), rf, maximize)
        assert got == _ray_asha_one_at_a_time(traj, rf, maximize)


def _run_concurrently(traj, k, rf, maximize, rng):
    """Trials start in order, at most ``k`` live; reports arrive in a random order; a trial the
    live decisions stop reports no further. Returns (recorded values, every live decision seen)."""
    n = len(traj)
    values: list[list[float]] = [[] for _ in range(n)]
    done = [False] * n
    started, live, seen = 0, [], []
    while started < n or live:
        while len(live) < k and started < n:
            live.append(started)
            started += 1
        i = live[int(rng.integers(0, len(live)))]
        if len(values[i]) == len(traj[i]):
            done[i] = True
        else:
            values[i].append(traj[i][len(values[i])])
            if asha_decisions(values, done, rf, maximize)[i][0] == "stopped":
                done[i] = True
        if done[i]:
            live.remove(i)
        seen.append(asha_decisions(values, done, rf, maximize))
    return values, seen


@pytest.mark.parametrize("k", [2, 3, 8])
def test_concurrent_trials_in_any_report_order_get_the_one_at_a_time_decisions(seed, k):
    rng = np.random.default_rng(seed)
    for _ in range(30):
        traj = _trajectories(rng, int(rng.integers(2, 10)), 4)
        maximize = bool(rng.integers(0, 2))
        expected = asha_decisions(traj, [True] * len(traj), 2, maximize)
        values, seen = _run_concurrently(traj, k, 2, maximize, rng)
        # the replay at the end (what tune_model ranks by) is the one-at-a-time result
        assert asha_decisions(values, [True] * len(values), 2, maximize) == expected
        # and no live decision ever contradicted it: a trial stopped while running is stopped
        # there in the reference, and a decided trial stays decided
        for snapshot in seen:
            for i, (kind, rung) in enumerate(snapshot):
                if kind == "stopped":
                    assert expected[i] == ("stopped", rung)


def test_a_decision_waits_for_an_earlier_trial_that_has_not_reached_the_rung():
    # trial 1 reaches rung 0 while trial 0 (running) has not: its decision is pending, not taken
    # against an empty rung (what timing-driven ASHA does)
    assert asha_decisions([[], [0.5]], [False, False], 2, True) == [("open", 0), ("pending", 0)]
    # trial 0 reports a better value: trial 1 is stopped at rung 0
    assert asha_decisions([[0.9], [0.5]], [False, False], 2, True)[1] == ("stopped", 0)
    # trial 0 ended without reaching the rung: trial 1 passes it
    assert asha_decisions([[], [0.5]], [True, False], 2, True)[1] == ("open", 1)
    # a trial stopped at rung 0 does not take part in rung 1
    values = [[0.9, 0.95], [0.5, 0.99], [0.6, 0.97]]
    assert asha_decisions(values, [True] * 3, 2, True) == [("open", 2), ("stopped", 0), ("stopped", 0)]


def test_nan_values_never_stop_a_trial_and_are_ignored_as_peers():
    nan = float("nan")
    assert asha_decisions([[nan], [0.1]], [True, True], 2, True) == [("open", 1), ("open", 1)]
    assert asha_decisions([[0.9], [nan]], [True, True], 2, True) == [("open", 1), ("open", 1)]
