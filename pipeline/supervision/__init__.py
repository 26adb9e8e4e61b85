"""The parts of the supervisor (:mod:`pipeline.supervisor`), one seam a module.

- :mod:`~pipeline.supervision.planning`: check the config, probe the sources, write the plan;
- :mod:`~pipeline.supervision.processes`: start a stage process, say why one failed, end
  them all, clear what dead runs left;
- :mod:`~pipeline.supervision.stage_stats`: each stage's ``done`` statistics, typed;
- :mod:`~pipeline.supervision.report`: the run report, built from those.

The supervisor itself keeps the run's lifecycle: start-up order, the event loop, restarts
and shutdown.
"""
