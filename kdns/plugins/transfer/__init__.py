"""kdns/plugins/transfer: zone transfers out (AXFR, IXFR as AXFR) and NOTIFY to secondaries."""
