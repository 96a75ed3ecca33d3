"""The pipeline: sources -> bounded intake -> batcher -> (spool) -> writer -> TStorage.

- ``settings``: the plain settings it runs on (target, batch, queue, retry).
- ``intake``: the bounded queue behind ``SourceContext.emit`` (backpressure, ack order).
- ``batch`` / ``batcher``: sealed batches, closed by bytes, records or flush interval;
  acq assigned at seal for ``puta``.
- ``stage``: the batcher -> writer interface where a disk spool can sit; in-memory default.
- ``writer`` / ``sink`` / ``validation``: delivery with retry, reconnect, poison isolation.
- ``deadletter``: the dead-letter file and its reader.
- ``pipeline``: :class:`~tstoraged.pipeline.pipeline.Pipeline`, which owns and runs them all.
- ``observer``: what the pipeline reports (metrics and status implement it).
- ``testing``: in-memory sink and observer for tests of the pipeline and of stages.
"""
