"""Where the stages run: `--detector/--device/--landmark-actors/--actors-per-gpu` and the cluster's GPUs at
start -> the map_batches keyword arguments of the actor pool (or None: CPU tasks)."""

import math

import pytest
from ray.data import ActorPoolStrategy

from pipelines.preprocess import build_parser, landmark_layout, resource_problem


def parse(arguments: list[str]):
    return build_parser().parse_args(["--input", "in", "--output", "out"] + arguments)


def layout(arguments: list[str], cluster_gpus: float, cluster_cpus: float | None = None):
    args = parse(arguments)
    return landmark_layout(
        args.detector, args.device, args.landmark_actors, cluster_gpus, args.actors_per_gpu, args.cpus_per_task,
        cluster_cpus,
    )


def pool(actor_pool: dict) -> tuple:
    """(min actors, max actors, GPUs per actor, CPUs per actor)."""
    compute = actor_pool["compute"]
    assert isinstance(compute, ActorPoolStrategy)
    return compute.min_size, compute.max_size, actor_pool["num_gpus"], actor_pool["num_cpus"]


def test_fan_on_cuda_asks_for_gpu_actors_on_a_cluster_with_no_gpus_yet():
    actor_pool, where = layout(["--detector", "fan", "--device", "cuda"], cluster_gpus=0)
    assert pool(actor_pool) == (1, math.inf, 1 / 8, 1.0)
    assert "GPU actors" in where and "1/8 GPU per actor" in where and "which has 0 now" in where


@pytest.mark.parametrize(
    "actors, bounds", [("4", (1, 4)), ("2,8", (2, 8)), ("3,3", (3, 3))]
)
def test_landmark_actors_bound_the_autoscaling_pool(actors, bounds):
    actor_pool, _ = layout(["--detector", "fan", "--device", "cuda", "--landmark-actors", actors], cluster_gpus=0)
    assert pool(actor_pool) == (*bounds, 1 / 8, 1.0)


def test_fan_on_auto_uses_the_gpus_at_start():
    actor_pool, where = layout(["--detector", "fan"], cluster_gpus=4)
    assert pool(actor_pool) == (32, 32, 1 / 8, 1.0)  # 8 actors share each GPU
    assert where == "landmarks (fan) on 32..32 GPU actors (--device auto and the cluster has 4 GPUs at start)"


@pytest.mark.parametrize(
    "arguments, cpus, actors, note",
    [
        ([], 64, 8, ""),  # room for all 8 beside the listing
        ([], 8, 7, ", CPUs for 7 of 8 actors beside the listing"),  # 8 would take every CPU: never an input
        (["--cpus-per-task", "2"], 8, 3, ", CPUs for 3 of 8 actors beside the listing"),
        (["--landmark-actors", "2,8"], 4, 2, ""),  # asked for: kept (resource_problem judges it)
    ],
)
def test_a_pool_sized_from_the_gpus_at_start_leaves_the_listing_a_cpu(arguments, cpus, actors, note):
    actor_pool, where = layout(["--detector", "fan"] + arguments, cluster_gpus=1, cluster_cpus=cpus)
    assert pool(actor_pool)[0] == actors
    assert where.endswith(f"(--device auto and the cluster has 1 GPUs at start{note})")
    assert resource_problem(actor_pool, parse(arguments).cpus_per_task, cpus, 1) == ""


def test_actors_per_gpu_sets_each_actors_share_of_a_gpu():
    actor_pool, _ = layout(["--detector", "fan", "--actors-per-gpu", "2", "--cpus-per-task", "3"], cluster_gpus=4)
    assert pool(actor_pool) == (8, 8, 0.5, 3.0)


def test_fan_on_auto_without_gpus_runs_fused_on_cpu_and_says_why():
    actor_pool, where = layout(["--detector", "fan"], cluster_gpus=0)
    assert actor_pool is None
    assert where == (
        "landmarks (fan) on CPU in tasks (--device auto and the cluster has no GPUs at start; "
        "--device cuda asks the autoscaler for GPU nodes)"
    )


@pytest.mark.parametrize(
    "arguments, expected",
    [
        (["--detector", "fan", "--device", "cpu"], None),
        (["--detector", "fan", "--device", "cpu", "--landmark-actors", "2"], (1, 2, 0, 1.0)),
        ([], None),  # dlib
        (["--landmark-actors", "1"], (1, 1, 0, 1.0)),  # dlib actors never take the cluster's GPUs
    ],
)
def test_cpu_layouts_never_ask_for_gpus(arguments, expected):
    actor_pool, _ = layout(arguments, cluster_gpus=4)
    assert (None if actor_pool is None else pool(actor_pool)) == expected


@pytest.mark.parametrize("actors", ["0", "3,2", "0,4", "two", "1,2,3"])
def test_bad_landmark_actors_is_one_error_line(capsys, actors):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["--input", "in", "--output", "out", "--landmark-actors", actors])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "--landmark-actors: expected MAX or MIN,MAX" in error


@pytest.mark.parametrize("count", ["0", "-1", "half"])
def test_bad_actors_per_gpu_is_one_error_line(capsys, count):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["--input", "in", "--output", "out", "--actors-per-gpu", count])
    assert exit_info.value.code == 2
    assert "--actors-per-gpu: expected a whole number >= 1" in capsys.readouterr().err


@pytest.mark.parametrize(
    "arguments, cpus, gpus, problem",
    [
        ([], 1, 0, ""),  # CPU tasks take turns with the listing
        (["--cpus-per-task", "2"], 1, 0, "--cpus-per-task 2 is more than the cluster's 1 CPUs"),
        (["--landmark-actors", "1,2"], 2, 0, ""),  # one actor and the listing's CPU
        (["--landmark-actors", "2,2"], 2, 0, "2 landmark actors x 1 CPUs leave the listing less than 1 of the cluster's 2"),
        (["--landmark-actors", "2,2"], 3, 0, ""),
        (["--detector", "fan", "--device", "cuda"], 2, 0, "GPU actors (FAN on --device cuda) need GPUs and the cluster has none"),
        (["--detector", "fan", "--device", "cuda", "--landmark-actors", "8,8"], 16, 1, ""),  # 8 x 1/8 GPU
        (["--detector", "fan", "--device", "cuda", "--landmark-actors", "9,9"], 16, 1, "9 landmark actors x 0.125 GPU"),
    ],
)
def test_layouts_that_could_never_start_are_named(arguments, cpus, gpus, problem):
    actor_pool, _ = layout(arguments, cluster_gpus=gpus)
    found = resource_problem(actor_pool, parse(arguments).cpus_per_task, cpus, gpus)
    assert (problem in found) if problem else found == ""
    assert bool(found) == bool(problem)
