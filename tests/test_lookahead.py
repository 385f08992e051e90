"""``Lookahead`` against a brute-force model: a notification is clear when no older notification still
unrouted shares a fingerprint or a (runbook, target) key with it."""

from __future__ import annotations

import random

from daemon.engine.lookahead import Lookahead


def test_clear_means_no_older_unrouted_notification_shares_a_mark() -> None:
    rnd = random.Random(5)
    for _ in range(200):
        look, unrouted = Lookahead(), {}  # the model: receipt -> (fingerprints, keys)
        for seq in range(1, 60):
            if unrouted and rnd.random() < 0.4:  # route some, in turn or ahead
                done = rnd.sample(sorted(unrouted), rnd.randint(1, min(3, len(unrouted))))
                look.routed(done)
                for s in done:
                    del unrouted[s]
            fingerprints = [f"fp{rnd.randrange(12)}" for _ in range(rnd.randint(0, 3))]  # repeats too
            keys = {("rb", f"t{rnd.randrange(8)}") for _ in range(rnd.randint(0, 2))}
            firing = rnd.random() < 0.8
            look.see(seq, fingerprints, keys, firing)
            shared = any(set(fingerprints) & set(fps) or keys & ks for fps, ks in unrouted.values())
            assert look.is_clear(seq) == (not shared and firing and bool(keys)), (seq, unrouted)
            unrouted[seq] = (fingerprints, keys)
        assert len(look) == len(unrouted)
        look.routed(list(unrouted))
        assert len(look) == 0 and not look._held  # every mark released


def test_a_fingerprint_and_a_key_never_stand_for_each_other() -> None:
    look = Lookahead()
    look.see(1, ["rb\x00t1"], set(), all_firing=True)  # a fingerprint spelled like the old key marks
    look.see(2, [], {("rb", "t1")}, all_firing=True)
    assert look.is_clear(2)
