"""Protocol rules with no HTTP: offsets, closure, Stream-Seq, producers, TTL, forks, waiters."""
