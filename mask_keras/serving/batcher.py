"""Requests batched across clients: one model call per model for whatever is waiting.

Each request is prepared on its own (decode and crop, in a thread; many at once), then its
rows join a queue. One task takes what waits and runs the models once on all of it, in a
single worker thread (the event loop keeps accepting meanwhile). When the service is idle a
request runs at once (``max_wait_ms=0``, the default: no added latency); under load the
requests that arrived during a batch form the next, so batches grow with load, up to
``max_batch`` rows. A request whose client has gone is answered into the void and never
blocks the queue.
"""
from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass
class _Item:
    prepared: object
    future: asyncio.Future
    rows: int
    queued: float = field(default_factory=time.perf_counter)


class Batcher:
    """Collects prepared requests and runs the predictor once per batch.

    Args:
        predictor: a :class:`mask_keras.inference.Predictor`.
        max_batch: the most rows one batch takes (a request larger than that runs alone).
        max_wait_ms: how long the first request of a batch waits for others (0: none).
        on_batch: called with each batch's row count (the metrics' histogram).
    """

    def __init__(self, predictor, max_batch: int = 16, max_wait_ms: float = 0.0, on_batch=None):
        if max_batch < 1 or max_wait_ms < 0:
            raise ValueError(f"max_batch must be >= 1 and max_wait_ms >= 0, got {max_batch}, {max_wait_ms}")
        self.predictor, self.max_batch, self.max_wait = predictor, int(max_batch), max_wait_ms / 1000.0
        self.on_batch = on_batch
        self.queue: asyncio.Queue | None = None
        self.task: asyncio.Task | None = None
        self.model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mask_keras_models")
        self.stats = {"requests": 0, "images": 0, "batches": 0, "largest_batch": 0}

    async def start(self) -> None:
        """Create the queue and start the batching task (in the running event loop)."""
        self.queue = asyncio.Queue()
        self.task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        """Cancel the batching task and let the model thread finish its batch."""
        if self.task is not None:
            self.task.cancel()
        self.model_thread.shutdown(wait=True)

    async def answer(self, prepared) -> list[dict]:
        """Queue one prepared request and wait for its answer rows (after :meth:`start`).

        Args:
            prepared: a :class:`mask_keras.inference.engine.Prepared` request.

        Returns:
            Its answer dicts.
        """
        item = _Item(prepared, asyncio.get_running_loop().create_future(), max(1, len(prepared.answered)))
        self.queue.put_nowait(item)
        self.stats["requests"] += 1
        return await item.future

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        held = None
        while True:
            batch = [held or await self.queue.get()]
            held = None
            rows = batch[0].rows
            deadline = batch[0].queued + self.max_wait
            while rows < self.max_batch:
                if self.queue.empty():
                    left = deadline - time.perf_counter()
                    if left <= 0:
                        break
                    try:
                        nxt = await asyncio.wait_for(self.queue.get(), left)
                    except asyncio.TimeoutError:
                        break
                else:
                    nxt = self.queue.get_nowait()
                if rows + nxt.rows > self.max_batch:
                    held = nxt  # the next batch starts with it
                    break
                batch.append(nxt)
                rows += nxt.rows
            live = [it for it in batch if not it.future.done()]  # a gone client's request is dropped here
            if not live:
                continue
            self.stats["batches"] += 1
            self.stats["images"] += rows
            self.stats["largest_batch"] = max(self.stats["largest_batch"], rows)
            if self.on_batch is not None:
                self.on_batch(rows)
            try:
                answers = await loop.run_in_executor(self.model_thread, self.predictor.run,
                                                     [it.prepared for it in live])
                for it, a in zip(live, answers):
                    if not it.future.done():
                        it.future.set_result(a)
            except Exception as e:  # noqa: BLE001 - reported to every waiting request, the loop goes on
                log.exception("prediction failed")
                for it in live:
                    if not it.future.done():
                        it.future.set_exception(e)
