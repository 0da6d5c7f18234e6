"""k8s_external: Services' external IPs and load-balancer addresses under an external zone
(CoreDNS ``k8s_external``), read from the kubernetes plugin's view.

``setup`` parses the directive, ``answer`` is the pure record logic, ``handler`` serves. See
README.md.
"""
