"""A fleet of pipelines on a Ray cluster: many files, many live streams, many hosts.

``python -m pipeline.fleet files ...`` runs the normal pipeline once per file on whichever
node Ray picks, commits each file's outputs atomically under a shared output root, resumes
and retries; ``python -m pipeline.fleet streams ...`` spreads live streams over worker
actors that Ray restarts elsewhere when a node dies, and serves one directory of where each
stream is published. See docs/FLEET.md.

Modules: ``cli`` (command line), ``cluster`` (joining Ray), ``child`` (the pipeline
subprocess), ``files`` (inputs, keys, resume, atomic commit), ``file_task`` (one attempt,
on a worker), ``file_run`` (the files driver), ``report`` (fleet report, progress),
``assign`` (balancing streams over workers), ``stream_worker`` (the worker actor),
``stream_run`` (the streams driver), ``directory`` (the stream directory service).
Ray is imported only where a cluster is used, so the pure parts import without it.
"""
