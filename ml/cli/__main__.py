"""`python -m ml.cli` (what `ml train --submit` runs on the cluster)."""

from ml.cli import app

app()
