"""Text classification with CI/CD/CT on GitHub Actions and Ray."""
