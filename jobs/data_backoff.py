"""A Ray Data scheduling loop that rests while the consumer has batches waiting.

Ray Data's streaming executor (Ray 2.60) runs its scheduling loop in a thread of the process that iterates
the dataset: the training driver itself in a local run. The loop blocks in `ray.wait` only while tasks are
running; once the consumer is behind (output queued, every operator backpressured, no task active) it spins,
and its bookkeeping then holds the GIL most of the time: a landmark warm-up step at 64 px, whose Python
overhead needs the GIL, ran 4-10x slower beside it (benchmarks/bench_ingest_overhead.py). `IdleBackoff`
sleeps the loop `REST_SECONDS` per iteration while output is waiting, so it wakes about 10 times a second
instead of thousands; it never rests while the consumer waits for data.

`install()` registers it in the current DataContext, which datasets made afterwards carry (to Ray Train's
split coordinator too).
"""

import time

import ray.data
from ray.data._internal.execution.execution_callback import ExecutionCallback

REST_SECONDS = 0.1  # one loop iteration holds the GIL ~5 ms: at 0.02 s it still took a quarter of the process


class IdleBackoff(ExecutionCallback):
    def on_execution_step(self, executor) -> None:
        # `_consumer_idling` (private; Ray is pinned in pyproject.toml): the output queue is empty.
        if not executor._consumer_idling():
            time.sleep(REST_SECONDS)


def install(context: "ray.data.DataContext | None" = None) -> None:
    context = context or ray.data.DataContext.get_current()
    if IdleBackoff not in context.custom_execution_callback_classes:
        context.custom_execution_callback_classes.append(IdleBackoff)
