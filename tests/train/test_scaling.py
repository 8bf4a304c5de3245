"""Does a scaling request fit the cluster's nodes? (`cpus_per_worker: auto`, fail fast.)

Pure logic over node resource dicts as `ray.nodes()` reports them; tests/train/test_train.py
checks the same against a real two-node cluster."""

from __future__ import annotations

import pytest

from ml.config import TrainSettings
from ml.train.cluster import AUTO_CPUS_CAP, fit_scaling, plan_scaling, workers_fitting
from ml.train.errors import TrainError

LAPTOP = [{"CPU": 2.0, "memory": 4e9, "node:127.0.0.1": 1.0}]
SMALL_NODES = [{"CPU": 1.0, "node:127.0.0.1": 1.0}, {"CPU": 1.0, "node:127.0.0.2": 1.0}]


@pytest.mark.parametrize(
    ("nodes", "workers", "cpus"),
    [
        (LAPTOP, 1, 2.0),  # one worker takes both cores of the embedded Ray
        (LAPTOP, 2, 1.0),
        (SMALL_NODES, 1, 1.0),  # the PR loop's two 1-CPU nodes
        (SMALL_NODES, 2, 1.0),
        ([{"CPU": 64.0}], 1, float(AUTO_CPUS_CAP)),
        ([{"CPU": 4.0}, {"CPU": 2.0}], 3, 2.0),
    ],
)
def test_auto_gives_each_worker_the_most_cpus_that_still_fit(nodes, workers, cpus):
    scaling = fit_scaling(TrainSettings(), workers, False, nodes)
    assert scaling is not None and scaling.cpus_per_worker == cpus
    assert scaling.resources == {"CPU": cpus}
    assert workers_fitting(nodes, scaling.resources) >= workers


def test_a_worker_must_fit_on_one_node():
    # Two 1-CPU nodes hold 2 CPUs, but no node holds a 2-CPU worker.
    assert fit_scaling(TrainSettings(cpus_per_worker=2), 1, False, SMALL_NODES) is None
    assert fit_scaling(TrainSettings(), 3, False, SMALL_NODES) is None
    gpu = TrainSettings(resources_per_worker={"accel": 1})
    assert fit_scaling(gpu, 1, True, [{"CPU": 8.0, "accel": 1.0}]) is None  # no GPU
    fits = fit_scaling(gpu, 1, True, [{"CPU": 8.0, "accel": 1.0, "GPU": 1.0}])
    assert fits is not None and fits.resources == {"CPU": 8.0, "accel": 1.0, "GPU": 1.0}


def test_misfit_waits_for_nodes_then_names_the_numbers_and_the_fix():
    polls: list[float] = []
    train = TrainSettings(cpus_per_worker=2)
    with pytest.raises(TrainError) as raised:
        plan_scaling(train, 1, False, wait_s=3.0, nodes=lambda: SMALL_NODES, sleep=polls.append)
    message = str(raised.value)
    assert polls  # it waited for the autoscaler before failing
    assert "1 worker(s) x {CPU 2}" in message and "need CPU 2 in all" in message
    assert "ONE node" in message and "hold 0 such worker(s)" in message
    assert "node 1: CPU 1; node 2: CPU 1" in message
    assert "train.num_workers" in message and "train.cpus_per_worker" in message
    assert "train.cluster_wait_s" in message


def test_nodes_that_join_during_the_wait_are_used():
    views = iter([SMALL_NODES, SMALL_NODES, [*SMALL_NODES, {"CPU": 2.0}]])
    scaling = plan_scaling(
        TrainSettings(cpus_per_worker=2),
        1,
        False,
        wait_s=60.0,
        nodes=lambda: next(views),
        sleep=lambda _: None,
    )
    assert scaling.cpus_per_worker == 2.0


def test_no_wait_on_a_ray_that_cannot_grow():
    calls: list[float] = []
    with pytest.raises(TrainError, match="need CPU 3 in all"):
        plan_scaling(
            TrainSettings(cpus_per_worker=3),
            1,
            False,
            wait_s=0.0,
            nodes=lambda: LAPTOP,
            sleep=calls.append,
        )
    assert not calls
