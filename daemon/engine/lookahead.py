"""Which stored notifications may be routed ahead of the backlog (issue 11 §7).

Routing goes oldest first. When it is behind (a storm of re-deliveries), a notification that introduces a
target with no run yet would wait for the whole backlog before its approval request. Such a notification
may jump the queue when routing it early gives the same result as routing it in turn: when no older
notification still unrouted touches what it touches. What a notification touches are its *marks*: the
fingerprint of each alert, and each (runbook, target) its alerts plan to (resolved alerts too, planned as
their labels would plan when firing: the runs a resolution acts on are the runs of those keys). Two
notifications without a common mark commute: each one's routing reads and writes only rows of its own
alerts and of its keys' runs. A notification with a resolved alert never jumps (a resolution acts on the
runs linked to the fingerprint, whatever key they were started for).

``Lookahead`` keeps the marks of the unrouted notifications it has seen, in receipt order, and the
notifications that were *clear* when seen: none of their marks was held by an older unrouted one.
Only notifications it has seen contiguously from the oldest unrouted one count: a gap (stored by another
replica, or before this process started) is read from the store before anything behind it may jump.
"""

from __future__ import annotations

Key = tuple[str, str]
"""(runbook, target)"""
Mark = str | Key
"""A fingerprint (str) or a (runbook, target) key (tuple): the two kinds never compare equal."""


class Lookahead:
    def __init__(self) -> None:
        self._marks: dict[int, tuple[Mark, ...]] = {}
        """Receipt -> its marks, for each unrouted notification seen."""
        self._held: dict[Mark, int] = {}
        """Mark -> how many unrouted notifications seen hold it (absent: none)."""
        self._clear: dict[int, frozenset[Key]] = {}
        """Receipts that were clear when seen, all firing, with the keys they plan to."""
        self.seen_to = 0
        """Every unrouted notification up to this receipt has been seen."""

    def __len__(self) -> int:
        return len(self._marks)

    def reset(self, seen_to: int = 0) -> None:
        """Forget everything (a new leader term: another replica may have routed meanwhile)."""
        self._marks.clear()
        self._held.clear()
        self._clear.clear()
        self.seen_to = seen_to

    def see(self, seq: int, fingerprints: list[str], keys: set[Key], all_firing: bool) -> None:
        """A notification stored after every one seen so far (receipts grow): every unrouted one seen
        before is older, so it is clear when none of them holds one of its marks."""
        marks: tuple[Mark, ...] = (*fingerprints, *keys)
        held = self._held
        clear = not any(mark in held for mark in marks)
        for mark in marks:  # a mark twice in one notification counts twice, and is released twice
            held[mark] = held.get(mark, 0) + 1
        self._marks[seq] = marks
        if clear and all_firing and keys:
            self._clear[seq] = frozenset(keys)
        self.seen_to = max(self.seen_to, seq)

    def routed(self, seqs: list[int]) -> None:
        held = self._held
        for seq in seqs:
            self._clear.pop(seq, None)
            for mark in self._marks.pop(seq, ()):
                if (left := held[mark] - 1) > 0:
                    held[mark] = left
                else:
                    del held[mark]

    def is_clear(self, seq: int) -> bool:
        return seq in self._clear

    def candidates(self, after: int, limit: int) -> list[tuple[int, frozenset[Key]]]:
        """Clear notifications behind receipt ``after`` (the batch being routed in turn), oldest first."""
        found: list[tuple[int, frozenset[Key]]] = []
        for seq, keys in self._clear.items():
            if seq > after:
                found.append((seq, keys))
                if len(found) >= limit:
                    break
        return found

    def settle(self, seq: int) -> None:
        """This clear notification only re-delivers to targets that have a run: it waits its turn."""
        self._clear.pop(seq, None)
