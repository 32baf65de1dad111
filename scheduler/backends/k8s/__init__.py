"""The Kubernetes backend: a job's stages as Indexed Jobs (see names.py for its conventions)."""
