"""Built-in Corefiles: what ``kdns serve`` runs when it is given no ``--conf``."""

from __future__ import annotations

DEFAULT_COREFILE = """\
# The kubeadm default Corefile (reference: cmd/kubeadm/app/phases/addons/dns/manifests.go),
# limited to the plugins this kdns release implements.
.:53 {
    errors
    health {
       lameduck 5s
    }
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }
}
"""
