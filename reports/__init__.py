"""Reports: the paper's tables and plots from the results store, an HTML report, the paper's
reference numbers with provenance, and the regression gate.

- ``python -m reports.build --root results [--out reports/site]``  tables (md/tex), plots, index.html
- ``python -m reports.gate --results DIR [--update]``              regression gate of a store vs reports/baseline/
  (``python -m harness.gate`` runs the toy gate sweeps first: generation lives in the harness)
- ``reports.reference.load_reference()``                            paper numbers (paper_reference.json)
"""
