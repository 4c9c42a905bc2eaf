"""Catalogues of wrong and right answers per phase, and the harness that runs them against the checks."""
