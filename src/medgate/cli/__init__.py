"""The ``medgate`` command, one module per command group; ``gateway.py`` composes a running server
(Ray, Serve, DICOM service, delivery and notification loops, worker).
"""
