"""Idempotent producers (Producer-Id / Producer-Epoch / Producer-Seq): Kafka-style
fencing and de-duplication, one state per (stream, producer id)."""

from __future__ import annotations

from dataclasses import dataclass

from ..store.base import ProducerState
from .errors import Conflict, InvalidRequest, ProducerSeqGap, StaleProducerEpoch


@dataclass(frozen=True, slots=True)
class ProducerClaim:
    producer_id: str
    epoch: int
    seq: int

    def as_tuple(self) -> tuple[str, int, int]:
        return (self.producer_id, self.epoch, self.seq)


@dataclass(frozen=True, slots=True)
class ProducerVerdict:
    duplicate: bool  # already accepted: acknowledge without writing
    epoch: int  # to echo in Producer-Epoch
    seq: int  # highest accepted seq, to echo in Producer-Seq


def judge(known: ProducerState | None, claim: ProducerClaim) -> ProducerVerdict:
    """Decide what a producer request means given the last accepted state."""
    if known is None:
        if claim.seq != 0:
            raise ProducerSeqGap(expected=0, received=claim.seq)
        return ProducerVerdict(False, claim.epoch, 0)
    if claim.epoch < known.epoch:
        raise StaleProducerEpoch(known.epoch)
    if claim.epoch > known.epoch:
        if claim.seq != 0:
            raise InvalidRequest("a new producer epoch must start at Producer-Seq 0")
        return ProducerVerdict(False, claim.epoch, 0)
    if claim.seq <= known.seq:
        return ProducerVerdict(True, known.epoch, known.seq)
    if claim.seq != known.seq + 1:
        raise ProducerSeqGap(expected=known.seq + 1, received=claim.seq)
    return ProducerVerdict(False, claim.epoch, claim.seq)


def check_stream_seq(last: str | None, new: str) -> None:
    """Stream-Seq values must strictly increase in byte-wise lexicographic order
    (scope: per stream)."""
    if last is not None and new.encode("utf-8", "surrogateescape") <= last.encode("utf-8", "surrogateescape"):
        raise Conflict(f"Stream-Seq {new!r} does not follow {last!r}")
