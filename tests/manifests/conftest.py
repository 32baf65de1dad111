"""The fixtures of tests/manifests/: ``installed`` (manifests/ applied to the test cluster)."""

from tests.manifests.kustomize import installed

__all__ = ["installed"]
