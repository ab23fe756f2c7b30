"""mstc-flow: the service with memory beside the mstc worker.

The worker runs one request as one Job and forgets it; this package keeps what outlives
the Job. It records every request's lifecycle events as history, fires the Jobs of a
catalog when their trigger topics carry a message (a completion event is such a topic,
so entries chain), and answers a REST API that the `mstc` command drives. It submits
through `mstc_client`, like any other client of the worker.
"""

__version__ = "0.1.0"
