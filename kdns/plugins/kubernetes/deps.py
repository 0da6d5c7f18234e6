"""Dependency keys of kubernetes answers: what a stored reply was read from in the view.

The answer function (:mod:`kdns.plugins.kubernetes.answer`) lists the keys of everything it
looked up; the view builder (:mod:`kdns.plugins.kubernetes.view`) reports the keys each publish
changed (``GENERATION.bump(keys)``), and the server evicts the stored replies listing one of
them. Names are the lower-case object names Kubernetes uses, so both sides agree.
"""

from __future__ import annotations

SERIAL = ("k8s", "serial")
"""The zone's SOA serial (the time of the view's last change): every publish changes it."""


def service(namespace: str, name: str) -> tuple[str, str, str]:
    """A Service's record, with its endpoints; also "no such Service" (NXDOMAIN). An answer
    about an existing Service lists only this key: the builder names every Service of a
    namespace whose :func:`namespace` key changes, so it stands for that one too."""
    return ("svc", namespace, name)


def namespace(name: str) -> tuple[str, str]:
    """Whether a namespace exists (and is exposed)."""
    return ("ns", name)


def ip(address: str) -> tuple[str, str]:
    """The Services and endpoints holding an address (reverse, PTR answers)."""
    return ("ip", address)


def pod(address: str) -> tuple[str, str]:
    """The Running pods holding an address (``pods verified``)."""
    return ("pod", address)
