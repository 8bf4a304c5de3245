"""An ML task as a plug-in (ml/tasks/) through CI/CD/CT on GitHub Actions and Ray."""
