"""`mstc_client.tasks.TaskQueue` against the stack's real RabbitMQ: `queue.Queue`'s rules.

Logged in as the stack's own user (a submitter filling a queue would use its own login); the
per-Job credentials are tested with the worker, in tests/worker/test_task_queues.py.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pika
import pytest

from mstc_client.errors import ConfigError, TaskNotJson, WaitTimeout
from mstc_client.tasks import TaskQueue, queue_name
from tests.support.stack import StackInfo

pytestmark = pytest.mark.stack

OpenQueue = Callable[..., TaskQueue]


@pytest.fixture
def name() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def open_queue(stack: StackInfo, name: str) -> Iterator[OpenQueue]:
    """TaskQueues on this test's queue; all closed, and the queue deleted, afterwards."""
    opened: list[TaskQueue] = []

    def make(queue_of: str = name) -> TaskQueue:
        tasks = TaskQueue(stack.amqp_url, queue_of)
        opened.append(tasks)
        return tasks

    yield make
    for tasks in opened:
        tasks.close()
    connection = pika.BlockingConnection(pika.URLParameters(stack.amqp_url))
    channel = connection.channel()
    channel.queue_delete(queue_name(name))
    channel.exchange_delete(queue_name(name))
    connection.close()


def test_put_get_task_done_in_order_with_sizes(open_queue: OpenQueue) -> None:
    tasks = open_queue()
    assert tasks.empty()
    assert tasks.qsize() == 0
    items = [{"id": 1, "files": ["a", "b"]}, "two", 3, 4.5, True, None, [7]]
    for item in items:
        tasks.put(item)
    assert tasks.qsize() == len(items)
    assert not tasks.empty()
    taken = [tasks.get(timeout=5) for _ in items]
    assert taken == items
    # Taken and not done: no longer ready, so not counted.
    assert tasks.qsize() == 0
    assert tasks.empty()
    for _ in items:
        tasks.task_done()
    with pytest.raises(ValueError, match="more times"):
        tasks.task_done()


def test_tasks_are_json_only(open_queue: OpenQueue) -> None:
    tasks = open_queue()
    for item in ({1, 2}, b"bytes", object(), float("nan"), {"x": float("inf")}, {(1, 2): 3}):
        with pytest.raises(TaskNotJson, match="JSON value"):
            tasks.put(item)
    assert tasks.qsize() == 0  # nothing half-published


def test_the_message_is_persistent_json(stack: StackInfo, open_queue: OpenQueue) -> None:
    tasks = open_queue()
    tasks.put({"n": 1})
    connection = pika.BlockingConnection(pika.URLParameters(stack.amqp_url))
    try:
        method, props, body = connection.channel().basic_get(tasks.queue, auto_ack=True)
    finally:
        connection.close()
    assert method is not None
    assert props.delivery_mode == 2
    assert props.content_type == "application/json"
    assert body == b'{"n":1}'


def test_get_on_an_empty_queue_times_out(open_queue: OpenQueue) -> None:
    tasks = open_queue()
    with pytest.raises(queue.Empty):
        tasks.get(block=False)
    with pytest.raises(queue.Empty):
        tasks.get_nowait()
    started = time.monotonic()
    with pytest.raises(queue.Empty):
        tasks.get(timeout=0.5)
    assert time.monotonic() - started >= 0.5


def test_a_waiting_get_wakes_on_a_put(open_queue: OpenQueue) -> None:
    consumer, producer = open_queue(), open_queue()
    got: list[object] = []
    waiting = threading.Thread(target=lambda: got.append(consumer.get(timeout=30)))
    waiting.start()
    producer.put("wake")
    waiting.join(timeout=30)
    assert got == ["wake"]
    consumer.task_done()


def test_a_task_not_done_goes_to_another_consumer(open_queue: OpenQueue) -> None:
    first, second = open_queue(), open_queue()
    first.put({"id": "only"})
    assert first.get(timeout=5) == {"id": "only"}
    with pytest.raises(queue.Empty):
        second.get(block=False)  # held by `first`
    first.close()  # as a dying process's connection closes: RabbitMQ requeues the task
    assert second.get(timeout=10) == {"id": "only"}
    second.task_done()
    assert second.qsize() == 0


def test_join_waits_for_every_task_to_be_taken_and_done(open_queue: OpenQueue) -> None:
    producer, consumer = open_queue(), open_queue()
    for n in range(20):
        producer.put(n)
    with pytest.raises(WaitTimeout):
        producer.join(timeout=0.2)  # nobody consumes yet
    done: list[int] = []

    def consume() -> None:
        for _ in range(20):
            done.append(consumer.get(timeout=10))
            consumer.task_done()

    worker = threading.Thread(target=consume)
    worker.start()
    producer.join(timeout=30)
    worker.join(timeout=30)
    assert producer.qsize() == 0
    assert sorted(done) == list(range(20))


def test_join_while_holding_a_task_is_refused(open_queue: OpenQueue) -> None:
    tasks = open_queue()
    tasks.put(1)
    tasks.get(timeout=5)
    with pytest.raises(ValueError, match="taken and not done"):
        tasks.join()
    tasks.task_done()
    tasks.join(timeout=5)


def test_from_env_reads_the_pods_variables(stack: StackInfo, name: str) -> None:
    with pytest.raises(ConfigError, match="MSTC_TASKS_URL"):
        TaskQueue.from_env({})
    env = {"MSTC_TASKS_URL": stack.amqp_url, "MSTC_TASK_QUEUE": name}
    with TaskQueue.from_env(env) as tasks:
        assert tasks.queue == f"mstc.tasks.{name}"
        tasks.put("x")
        assert tasks.get(timeout=5) == "x"
        tasks.task_done()
    connection = pika.BlockingConnection(pika.URLParameters(stack.amqp_url))
    channel = connection.channel()
    channel.queue_delete(queue_name(name))
    channel.exchange_delete(queue_name(name))
    connection.close()


@pytest.mark.parametrize("bad", ["", "a.b", "a*", "#", "-x", "x" * 101, "ä"])
def test_names_are_checked(bad: str) -> None:
    with pytest.raises(ConfigError, match="task queue name"):
        queue_name(bad)
