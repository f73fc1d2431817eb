"""The redis-k8s state machines: pure, persisted, property-tested.

Read in this order:

- ``types``: events, observations, facts, inputs and effects (the vocabulary);
- ``unit``: the unit machine (one unit's redis and sentinel, bootstrap to teardown);
- ``cluster``: the cluster machine (the leader's decisions, Sentinel as the truth);
- ``engine``: how a table of rows is compiled with ``transitions`` and stepped;
- ``journal``: snapshot + compact log + current facts, as kept in peer data;
- ``hook``: one hook run to completion (observe, step, execute, observe).

Nothing in this package does I/O, reads a clock or draws random numbers.
"""
