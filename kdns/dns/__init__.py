"""kdns/dns: the DNS wire format kdns reads and writes (:mod:`kdns.dns.wire`).

Importing the package also turns dnslib's name tables into plain attributes. ``QTYPE.A`` or
``RCODE.NXDOMAIN`` is resolved by ``Bimap.__getattr__``, which Python calls only after the
normal lookup has failed, so every read first builds and discards an AttributeError (about
2,000 CPU instructions, measured with callgrind, several times per answer). Copying each
table's name -> code map into the instance's ``__dict__`` makes those reads ordinary
attribute hits with the same values. Names a table does not know still go to
``__getattr__`` and behave as before.
"""

from __future__ import annotations

from dnslib.bimap import Bimap
from dnslib.dns import CLASS, OPCODE, QR, QTYPE, RCODE


def _plain_attributes(table: Bimap) -> None:
    own = vars(table)
    for name, code in table.reverse.items():
        if name.isidentifier() and name not in own:
            own[name] = code


for _table in (CLASS, OPCODE, QR, QTYPE, RCODE):
    _plain_attributes(_table)
