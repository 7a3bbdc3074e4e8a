"""Chaos soak: bot processes on one real Redis and one real PostgreSQL,
steady traffic, random reproducible faults, and a ledger checked at the end.

Run ``python -m bench.chaos --messages 20000 --seed 7`` (see docs/CHAOS.md).

Modules: :mod:`bench.chaos.worker` (the bot process), :mod:`bench.chaos.instances`
(driving it), :mod:`bench.chaos.ledger` (what was sent, received and answered,
and the checker), :mod:`bench.chaos.conversations` (memory judged per
conversation), :mod:`bench.chaos.overlaps` (when faults overlapped),
:mod:`bench.chaos.faults` (the fault lanes), :mod:`bench.chaos.soak` (the
driver and its delivery models), :mod:`bench.chaos.cli`.
"""
