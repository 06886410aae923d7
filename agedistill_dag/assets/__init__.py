"""Assets by domain: data (manifest, crops), teacher (labels, table), corruptions, students,
benchmarks.  Each module has one function ``assets(p)`` that defines its assets for profile ``p``
(keys ``<profile>/<asset>``); each asset calls one core stage and returns its data version."""
