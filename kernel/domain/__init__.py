"""Pure domain core of rocars: plain values in, plain values out.

Nothing in this package does I/O, touches the database, Redis or aiohttp, or reads the clock;
callers pass ``now`` and random draws in, so every rule is deterministic and unit-testable.

- ``ccrn``            Customs Cargo Reference Number: format and Damm check digit
- ``lbcp``            land boundary control point codes; Hong Kong time
- ``advance_window``  an e-ACI must be made 30 minutes to 14 days before crossing
- ``vrn``             vehicle registration mark normalisation
- ``bundling``        cross-now / cross-after instruction; bundle consistency checks
- ``risk``            risk-profiling rules, assessment and officer override
- ``gate``            the LBCP gate decision (release / inspect / hold / manual)
- ``itfs``            ITFS: land-to-air transshipment cargo is inspected at most once
"""
