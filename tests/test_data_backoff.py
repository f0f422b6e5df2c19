"""The loop's rest itself is measured by benchmarks/bench_ingest_overhead.py (a speed, not a test's business):
whether Ray Data's loop spins depends on the machine's load and the set's size, which a short test cannot pin.
When it rests is tested here on an object with the executor attributes the callback reads, under a clock that
moves only when the rest sleeps (no wall time, so a loaded machine cannot fail them)."""

import collections

import ray.data

from jobs import data_backoff
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


class FakeOperator:
    def __init__(self, active: int):
        self.active = active

    def get_active_tasks(self):
        return [object()] * self.active


class FakeExecutor:
    """The executor attributes IdleBackoff reads (Ray 2.60's StreamingExecutor): the output operator's queue,
    the topology's operators and the shutdown flag."""

    def __init__(self, queued: int, active: int):
        self.output_queue = collections.deque(range(queued))
        self._output_node = (None, self)
        self._topology = {FakeOperator(0): None, FakeOperator(active): None}
        self._shutdown = False


class FakeClock:
    """Stands in for jobs.data_backoff's `time`: sleeping advances it; `action` runs once it reaches `at`."""

    def __init__(self, at: float = float("inf"), action=None):
        self.now, self.at, self.action = 0.0, at, action

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        if self.action is not None and self.now >= self.at:
            self.action()
            self.action = None


def rest_of(executor, monkeypatch, clock: FakeClock | None = None) -> float:
    """Seconds the callback rests, on the fake clock."""
    clock = clock or FakeClock()
    monkeypatch.setattr(data_backoff, "time", clock)
    IdleBackoff().on_execution_step(executor)
    return clock.now


def test_the_loop_rests_only_while_output_waits_and_nothing_runs(monkeypatch):
    assert rest_of(FakeExecutor(queued=0, active=0), monkeypatch) == 0  # the consumer waits for data
    assert rest_of(FakeExecutor(queued=2, active=1), monkeypatch) == 0  # ray.wait on the running task paces the loop
    spin = rest_of(FakeExecutor(queued=2, active=0), monkeypatch)  # the spin the backoff exists for
    assert data_backoff.REST_SECONDS <= spin < data_backoff.REST_SECONDS + 2 * data_backoff.POLL_SECONDS


def test_a_block_taken_by_the_consumer_ends_the_rest_at_once(monkeypatch):
    """A fast consumer must not wait out the rest (a fixed 0.1 s sleep held small models to ~10 batches a second)."""
    executor = FakeExecutor(queued=2, active=0)
    rest = rest_of(executor, monkeypatch, FakeClock(at=0.02, action=executor.output_queue.popleft))
    assert 0.02 <= rest < 0.02 + 2 * data_backoff.POLL_SECONDS
