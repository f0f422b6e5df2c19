"""The loop's rest itself is measured by benchmarks/bench_ingest_overhead.py (a speed, not a test's business):
whether Ray Data's loop spins depends on the machine's load and the set's size, which a short test cannot pin."""

import ray.data

from jobs.data_backoff import IdleBackoff, install


def test_install_registers_the_backoff_once_where_the_planner_finds_it():
    context = ray.data.DataContext.get_current().copy()
    context.custom_execution_callback_classes = []
    install(context)
    install(context)
    assert context.custom_execution_callback_classes == [IdleBackoff]
    assert IdleBackoff in context.execution_callback_classes  # what the planner instantiates for an execution


def test_training_datasets_carry_the_backoff(sample_clips):
    import ray

    from jobs.data import training_dataset

    started_here = not ray.is_initialized()  # making the dataset starts a local Ray; later tests start their own
    try:
        dataset = training_dataset(str(sample_clips[0]), 2, 64, seed=0)
        assert IdleBackoff in dataset.context.execution_callback_classes
    finally:
        if started_here:
            ray.shutdown()
