"""Persistence: the index of instances and studies, the job queue, the outbox and the other durable
queues (deliveries, notifications, referrals, traced CDS answers), their migrations, and the
instance files with their file pool. One write path per row; rows are typed; statuses are
``StrEnum`` values. Knows nothing of inference, clinical rules or HTTP.
"""
