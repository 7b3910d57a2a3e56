"""Foundations every other package may use and that import nothing of medgate: typed configuration,
logging with keyed hashes for identifiers, the one deterministic-UID maker, checksums, ports,
secret redaction and the start-up checks of ``medgate serve``.
"""
