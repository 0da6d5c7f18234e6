"""hosts: A, AAAA and PTR from a hosts(5) file and inline Corefile entries (CoreDNS ``hosts``).

``setup`` parses the directive and the file format, ``handler`` serves and reloads. See README.md.
"""
