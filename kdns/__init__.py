"""kdns: a Kubernetes cluster DNS server configured by a CoreDNS Corefile."""

__version__ = "0.1.0"
