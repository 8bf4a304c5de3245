"""Human-readable reports: the PR comment."""
