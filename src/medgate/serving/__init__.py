"""Ray Serve: one application per model bundle (dynamic batching, replicas sized to the machine),
the API ingress that hosts ``medgate.api``, the HTTP front (HAProxy) and cross-process metrics.
"""
