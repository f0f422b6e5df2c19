"""A Ray Data scheduling loop that rests while the consumer has batches waiting and nothing runs.

Ray Data's streaming executor (Ray 2.60) runs its scheduling loop in a thread of the process that iterates
the dataset: the training driver itself in a local run. The loop blocks in `ray.wait` only while tasks are
running; once the consumer is behind (output queued, every operator backpressured, no task active) it spins,
and its bookkeeping then holds the GIL most of the time: a landmark warm-up step at 64 px, whose Python
overhead needs the GIL, ran 4-10x slower beside it (benchmarks/bench_ingest_overhead.py).

`IdleBackoff` rests the loop in that state only, until the consumer takes a block from the output queue (the
one event that can unblock it) or `REST_SECONDS` pass. It polls the queue's length, which needs the GIL for
microseconds, so a fast consumer (a small model's 10 ms step) never waits on the rest; an earlier fixed
0.1 s sleep held such consumers to about ten dispatches a second.

`install()` registers it in the current DataContext, which datasets made afterwards carry (to Ray Train's
split coordinator too).
"""

import time

import ray.data
from ray.data._internal.execution.execution_callback import ExecutionCallback

REST_SECONDS = 0.1  # the longest rest: the loop still looks around ten times a second
POLL_SECONDS = 0.002  # how soon a taken block wakes the loop


class IdleBackoff(ExecutionCallback):
    def on_execution_step(self, executor) -> None:
        # Private attributes (Ray is pinned in pyproject.toml): the output operator's queue and the topology.
        _, output = executor._output_node
        waiting = len(output.output_queue)
        if waiting == 0 or any(op.get_active_tasks() for op in executor._topology):
            return  # the consumer waits for data, or `ray.wait` on the running tasks paces the loop
        deadline = time.monotonic() + REST_SECONDS
        while len(output.output_queue) == waiting and not executor._shutdown and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)


def install(context: "ray.data.DataContext | None" = None) -> None:
    context = context or ray.data.DataContext.get_current()
    if IdleBackoff not in context.custom_execution_callback_classes:
        context.custom_execution_callback_classes.append(IdleBackoff)
