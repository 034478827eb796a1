"""What a trial holds and how many trials a cluster holds; the checks made before any work."""

import pytest

from orchestrator._cluster import check_fits, check_storage_shared
from orchestrator._resources import Resources, check_amount
from results import Storage
from undistill.errors import ConfigError


@pytest.mark.parametrize("value", [0.25, 0.5, 1, 2, 3])
def test_gpu_amounts_ray_can_honour(value):
    assert check_amount("--gpus-per-trial", value, allow_zero=True) == value


@pytest.mark.parametrize("value,message", [(1.5, r"whole number \(1 or 2\)"), (-1, "must be ≥ 0"),
                                           (0.00001, "precision"), (float("nan"), "must be")])
def test_gpu_amounts_ray_cannot_honour_are_refused(value, message):
    with pytest.raises(ConfigError, match=message):
        check_amount("--gpus-per-trial", value, allow_zero=True)


def test_cpus_must_be_positive():
    with pytest.raises(ConfigError, match="must be > 0"):
        check_amount("--cpus-per-trial", 0, allow_zero=False)


def test_a_trial_is_one_bundle_for_itself_and_one_per_student():
    res = Resources(cpus=1, gpus=0.5, students=2)
    assert res.bundles == 3 and res.bundle() == {"CPU": 1, "GPU": 0.5}
    assert Resources(cpus=2, gpus=0, students=1).bundle() == {"CPU": 2}
    assert res.task_options() == {"num_cpus": 1, "num_gpus": 0.5}


@pytest.mark.parametrize("gpus,node,slots", [
    (0.5, {"CPU": 8, "GPU": 2}, 4),  # two halves per GPU
    (0.4, {"CPU": 8, "GPU": 2}, 4),  # 0.4 fits twice in a GPU, not 2.5 times
    (0.25, {"CPU": 3, "GPU": 2}, 3),  # CPUs run out first
    (1, {"CPU": 8, "GPU": 2}, 2),
    (2, {"CPU": 8, "GPU": 5}, 2),
    (0.5, {"CPU": 8}, 0),  # a node without GPUs holds no GPU bundle
    (0, {"CPU": 8}, 8),
])
def test_bundles_per_node(gpus, node, slots):
    assert Resources(cpus=1, gpus=gpus, students=2).slots(node) == slots


def test_concurrency_follows_the_cluster_and_is_capped():
    nodes = [{"CPU": 1, "GPU": 0, "address": "h"}, {"CPU": 4, "GPU": 2, "address": "a"},
             {"CPU": 4, "GPU": 2, "address": "b"}]
    res = Resources(cpus=1, gpus=0.5, students=2)
    assert check_fits(nodes, res, None) == 2  # 8 half-GPU bundles, 3 per trial
    assert check_fits(nodes, res, 1) == 1
    with pytest.raises(ConfigError, match="one trial needs 6 GPUs"):
        check_fits(nodes, Resources(cpus=1, gpus=2, students=2), None)
    with pytest.raises(ConfigError, match="cannot place"):
        check_fits(nodes, Resources(cpus=16, gpus=0, students=2), None)


def test_a_local_path_is_refused_when_any_node_runs_on_another_machine(tmp_path):
    here = {"127.0.0.1", "192.0.2.2"}  # this driver's machine
    local = Storage(tmp_path)
    two_hosts = [{"address": "10.0.0.1"}, {"address": "10.0.0.2"}]
    one_elsewhere = [{"address": "10.0.0.1"}]  # a one-node cluster, but not on this machine
    same_machine = [{"address": "127.0.0.1"}, {"address": "192.0.2.2"}]  # fake nodes share a disk
    for nodes in (two_hosts, one_elsewhere):
        with pytest.raises(ConfigError, match="--shared-storage"):
            check_storage_shared(nodes, local, declared_shared=False, here=here)
        check_storage_shared(nodes, local, declared_shared=True, here=here)
        check_storage_shared(nodes, Storage("s3://bucket/x?region=us-east-1"), False, here=here)
    check_storage_shared(same_machine, local, declared_shared=False, here=here)
