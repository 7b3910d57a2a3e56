"""The job worker: a queued study is routed to its models (through Ray Serve), triaged, given
guidance by the clinical rules, turned into result objects by the reports, and queued in the outbox.
"""
