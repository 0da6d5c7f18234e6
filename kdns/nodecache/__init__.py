"""``kdns node-cache``: the node-local DNS cache, a drop-in for NodeLocal DNSCache's node-cache.

``flags`` parses node-cache's command line, ``corefile`` fills the base Corefile's pillars,
``netif`` and ``iptables`` own the node's network set-up, ``app`` runs them around a kdns server.
"""
