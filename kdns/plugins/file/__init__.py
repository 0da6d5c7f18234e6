"""file: authoritative answers from an RFC 1035 master file (CoreDNS ``file``).

``setup`` parses the directive and the zone file into an immutable zone, ``handler`` answers
from it and reloads it. See README.md.
"""
