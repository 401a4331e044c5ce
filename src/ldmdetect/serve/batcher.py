"""Score requests that arrive together in one device batch.

One image per forward pass leaves most of a GPU idle, and on a CPU the per-call overhead
dominates small models. The batcher collects images for a few milliseconds (or until it has a
full batch), runs the scoring function once in a single worker thread, and resolves each
caller's future with its own score. One worker thread also means the model is never called from
two threads at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

# images -> scores (N,), or (scores (N,), per-class probabilities (N, K)[, novel (N,) or None])
ScoreFn = Callable[[list[Image.Image]], "np.ndarray | tuple"]


@dataclass(frozen=True)
class BatchResult:
    """One image's score and how it was computed."""

    score: float
    batch_size: int  # images in the device batch this one was part of
    queued_ms: float  # from submit to the start of its batch
    score_ms: float  # the batch's scoring time
    #: per-class probabilities, where the scorer gives them (methods of more than two classes)
    probabilities: tuple[float, ...] | None = None
    #: novel to every class the detector knows (a family head with novelty statistics)
    novel: bool | None = None


@dataclass
class _Item:
    image: Image.Image
    future: asyncio.Future
    submitted: float


class MicroBatcher:
    """Collect images for up to ``max_wait_ms`` or ``max_batch`` images, then score them once."""

    def __init__(self, score_fn: ScoreFn, *, max_batch: int = 16, max_wait_ms: float = 5.0):
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.score_fn = score_fn
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.batches_run = 0
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ldm-score")
        self._queue: asyncio.Queue[_Item] | None = None
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _ensure_running(self) -> asyncio.Queue[_Item]:
        # Started lazily in the loop that serves requests (a test client may run several loops
        # in sequence; each gets its own queue and collector task).
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._loop is not loop:
            self._loop = loop
            self._queue = asyncio.Queue()
            self._task = loop.create_task(self._collect(self._queue))
        assert self._queue is not None
        return self._queue

    async def submit(self, image: Image.Image) -> BatchResult:
        """Score one image, batched with whatever else arrives at about the same time."""
        queue = self._ensure_running()
        future = asyncio.get_running_loop().create_future()
        queue.put_nowait(_Item(image, future, time.perf_counter()))
        return await future

    async def _collect(self, queue: asyncio.Queue[_Item]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = [await queue.get()]
            deadline = loop.time() + self.max_wait_s
            while len(items) < self.max_batch:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    items.append(await asyncio.wait_for(queue.get(), remaining))
                except asyncio.TimeoutError:
                    break
            items = [item for item in items if not item.future.done()]  # caller went away
            if items:
                await self._run(items)

    async def _run(self, items: list[_Item]) -> None:
        start = time.perf_counter()
        images = [item.image for item in items]
        try:
            scores = await asyncio.get_running_loop().run_in_executor(
                self._executor, self.score_fn, images
            )
            probabilities: list | None = None
            novel: list | None = None
            if isinstance(scores, tuple):
                scores, per_class, *flags = scores
                probabilities = [tuple(map(float, row)) for row in np.asarray(per_class)]
                if flags and flags[0] is not None:
                    novel = [bool(flag) for flag in flags[0]]
            scores = np.asarray(scores, dtype=np.float64).reshape(-1)
            if scores.shape[0] != len(items):
                raise RuntimeError(f"scorer returned {scores.shape[0]} scores for {len(items)}")
        except Exception as err:  # every waiting caller gets the error, the collector lives on
            for item in items:
                if not item.future.done():
                    item.future.set_exception(err)
            return
        finally:
            self.batches_run += 1
        score_ms = (time.perf_counter() - start) * 1000.0
        for j, (item, score) in enumerate(zip(items, scores, strict=True)):
            if not item.future.done():
                item.future.set_result(
                    BatchResult(
                        score=float(score),
                        batch_size=len(items),
                        queued_ms=(start - item.submitted) * 1000.0,
                        score_ms=score_ms,
                        probabilities=None if probabilities is None else probabilities[j],
                        novel=None if novel is None else novel[j],
                    )
                )

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
