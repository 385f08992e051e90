"""Which alerts routing has linked to their runs, so that a re-delivery writes nothing.

Alertmanager re-sends every firing alert of a group at each ``group_interval``/``repeat_interval``: in a
storm most alerts routed are already linked, firing, to their active run (``alert_links``). Writing the
link again changes nothing, so the router remembers the links it committed and leaves them alone until
the alert resolves.

Only what is known to be committed counts: links are noted as pending and kept only when their
transaction commits (``commit``), dropped when it or its savepoint rolls back (``rollback_to``). A
resolution forgets the alert's links at once, and any link of it still pending, so a link is never
believed firing when the store says resolved. Only for a store this process alone writes (SQLite);
cleared when this replica stops leading.
"""

from __future__ import annotations

MAX_ALERTS = 100_000
"""Most alerts remembered (~200 bytes each); past that the memory starts again empty."""

_Link = tuple[str, str, str]
"""(fingerprint, runbook, run id): the primary key of ``alert_links``."""


class Recorded:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._links: dict[str, set[tuple[str, str]]] = {}
        """fingerprint -> {(runbook, run id)} linked and firing (committed)."""
        self._log: list[tuple[bool, _Link]] = []
        """Pending, in order: (True, link) written firing, (False, (fingerprint, "", "")) resolved."""

    def linked(self, fingerprint: str, runbook: str, run_id: str) -> bool:
        """Linked to this run and firing (committed): writing the link again would change nothing."""
        links = self._links.get(fingerprint)
        return links is not None and (runbook, run_id) in links

    def link(self, fingerprint: str, runbook: str, run_id: str) -> None:
        """This transaction writes the link firing."""
        if self.enabled:
            self._log.append((True, (fingerprint, runbook, run_id)))

    def forget(self, fingerprint: str) -> None:
        """The alert resolved: its links are no longer firing (whether or not this commits)."""
        self._links.pop(fingerprint, None)
        if self.enabled:
            self._log.append((False, (fingerprint, "", "")))  # and any link of it pending before this

    def mark(self) -> int:
        return len(self._log)

    def rollback_to(self, mark: int) -> None:
        del self._log[mark:]

    def commit(self) -> None:
        """The transaction that wrote what is pending committed."""
        if len(self._links) + len(self._log) > MAX_ALERTS:
            self.clear()
            return
        for firing, (fingerprint, runbook, run_id) in self._log:
            if firing:
                self._links.setdefault(fingerprint, set()).add((runbook, run_id))
            else:
                self._links.pop(fingerprint, None)
        self._log.clear()

    def clear(self) -> None:
        self._links.clear()
        self._log.clear()
