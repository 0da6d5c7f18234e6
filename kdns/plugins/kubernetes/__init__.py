"""kubernetes: answers the cluster zone (Kubernetes DNS-Based Service Discovery 1.1.0) from an
immutable view of Services, EndpointSlices, Namespaces and (with ``pods verified``) Pods.

``setup`` parses the directive, ``view`` keeps the cluster state, ``answer`` is the pure record
logic, ``handler`` serves and runs the source. ``xfr`` enumerates the zone for the *transfer*
plugin; ``mcview``, ``mcanswer`` and ``multicluster`` serve the ``multicluster`` (clusterset)
zones from ServiceImports. See README.md.
"""
