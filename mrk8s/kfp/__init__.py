"""mrk8s as a Kubeflow Pipelines (v2) step: a component, a pipeline compiler, the step's body.

    from mrk8s.kfp import mapreduce_op

    @dsl.pipeline
    def counts(text_uri: str):
        words = mapreduce_op(script_source=WORDCOUNT, inputs=[text_uri], reducers=4)
        report(counts=words.outputs["output"])

:data:`mapreduce_op` is a lightweight Python component: KFP runs its body
(:func:`run_step`) in the worker image (:data:`DEFAULT_IMAGE`, built from
``manifests/Dockerfile``), which has mrk8s installed. The step runs
``mrk8s run`` in its own pod (``backend="local"``) or fans the job out to the
cluster as Indexed Jobs from there (``backend="k8s"``, with the step's
in-cluster credentials), and gives the next step:

- ``output``, a ``Dataset``: the job's output directory (part files,
  ``summary.json``, ``_SUCCESS``);
- ``metrics``, a ``Metrics`` artifact: the job's counters, records and bytes
  per stage and its seconds, which the KFP UI shows.

Artifacts by reference: when the output ``Dataset``'s URI is in object
storage (``s3://``, ``gs://``), the reducers write their parts straight to
that URI and the step's local path of the artifact stays empty, so KFP's
launcher has nothing to copy; an input ``Dataset`` in object storage is read
in place from its URI (any directory of files, an mrk8s output directory
included: ``_SUCCESS`` and ``summary.json`` are skipped as every hidden or
underscore name is). Other URIs (a local pipeline root, KFP's ``minio://``)
go through the artifact's local path, as KFP expects.

The job script reaches the step in one of three ways: ``script_source`` (its
text, as ``mrk8s kfp compile`` embeds it: the pipeline is self-contained,
but modules beside the script are not shipped), ``script_file`` (an input
artifact from an earlier step) or ``script`` (a path in the image or a URL).

``mrk8s kfp compile SCRIPT -o pipeline.yaml [OPTIONS] [-- JOB OPTIONS]``
writes a ready-to-upload pipeline of one mrk8s step, and ``mrk8s kfp
component -o component.yaml`` the reusable component (:func:`main`).
"""

from typing import Any

__all__ = [
    "DEFAULT_IMAGE",
    "main",
    "make_component",
    "make_pipeline",
    "mapreduce_op",
    "mapreduce_script_file_op",
    "mapreduce_urls_op",
]


def __getattr__(name: str) -> Any:
    # The KFP SDK is imported only when a component or the compiler is asked for:
    # a step's body (mrk8s.kfp.step) runs inside KFP's executor without it.
    if name in __all__:
        from mrk8s.kfp import components

        return getattr(components, name)
    raise AttributeError(f"module 'mrk8s.kfp' has no attribute {name!r}")
