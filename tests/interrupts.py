"""Stopping a run part-way, as Ctrl-C or a crash would, for the resume tests."""

from __future__ import annotations


class Interrupt(Exception):
    """Raised to cut a run; a resume test expects it."""


class StopAt:
    """A callback that cuts the run at the end of epoch ``epoch`` (after its checkpoint is due)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, trainer, record) -> None:
        if record["epoch"] == self.epoch:
            raise Interrupt
