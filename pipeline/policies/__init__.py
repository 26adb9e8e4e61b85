"""The runtime's decisions as plain classes: no sockets, no processes, no clocks of their own.

Each stage process owns the I/O and asks one of these what to do; they are unit-tested
table by table (tests/test_policies.py) in milliseconds, instead of through five processes.

- :mod:`~pipeline.policies.fixed_batches`: which frames form a batch (files, by seq);
- :mod:`~pipeline.policies.slot_credits`: which ring slots capture may write, which frames
  are in flight (for replays), and whether a live frame may be admitted to the model;
- :mod:`~pipeline.policies.publish_ledger`: publish / drop / hold / commit / release;
- :mod:`~pipeline.policies.restart`: whether and when a failed stage is restarted.
"""
