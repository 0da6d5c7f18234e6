"""dnslib's name tables read as plain attributes once kdns.dns is imported (kdns/dns/__init__)."""

from __future__ import annotations

import pytest
from dnslib import CLASS, QTYPE, RCODE
from dnslib.bimap import Bimap
from dnslib.dns import DNSError

import kdns.dns  # noqa: F401  (the import is what is tested)

TABLES = {"QTYPE": QTYPE, "RCODE": RCODE, "CLASS": CLASS}


@pytest.mark.parametrize("which", sorted(TABLES))
def test_every_name_reads_as_its_code_without_getattr(which: str) -> None:
    table: Bimap = TABLES[which]
    for name, code in table.reverse.items():
        if name.isidentifier():
            assert name in vars(table), name
            assert getattr(table, name) == code == table.reverse[name]


def test_the_values_kdns_relies_on() -> None:
    assert (QTYPE.A, QTYPE.AAAA, QTYPE.SRV, QTYPE.OPT, QTYPE.ANY) == (1, 28, 33, 41, 255)
    assert (RCODE.NOERROR, RCODE.SERVFAIL, RCODE.NXDOMAIN, RCODE.REFUSED) == (0, 2, 3, 5)
    assert CLASS.IN == 1
    assert QTYPE[1] == "A" and RCODE[3] == "NXDOMAIN"


def test_unknown_names_still_fail_as_before() -> None:
    with pytest.raises(DNSError, match="Invalid reverse lookup"):
        _ = RCODE.NOSUCHCODE
    assert QTYPE[65280] == "TYPE65280"
