"""The pipeline without Prefect: the grid, the student recipes, the cache keys, the cells.

A pipeline or sweep is teachers -> scores -> students -> report. Everything a cell
computes from, when it is reused and what it is charged is decided here, so the
rules hold whichever task runner executes a cell (one process, a process pool,
Dask workers on other machines) and without Prefect at all; the Prefect flows
(``datapruning.flows``) only order the cells and fan them out.

- :mod:`~datapruning.pipeline.grid`: the experiments (dataset x model) of a config;
- :mod:`~datapruning.pipeline.data`: an experiment's dataset, loaded once per process;
- :mod:`~datapruning.pipeline.recipes`: the student grid, the subset and the training
  settings of each student (:class:`~datapruning.pipeline.recipes.StudentRecipe`);
- :mod:`~datapruning.pipeline.keys`: the cache keys that decide reuse, and the library
  source they hash;
- :mod:`~datapruning.pipeline.train_cells`: the training cells (teacher, student, one run);
- :mod:`~datapruning.pipeline.score_cells`: the scoring cells (seed groups, shards, merge);
- :mod:`~datapruning.pipeline.recorded`: ``scoring.source: runs``, the scores the full-data
  runs record, averaged over their seeds;
- :mod:`~datapruning.pipeline.accounting`: what a student is charged, and the tally;
- :mod:`~datapruning.pipeline.failures`: which errors are retried, and failure records;
- :mod:`~datapruning.pipeline.order`: which ready cell goes to a runner first;
- :mod:`~datapruning.pipeline.deploy`: registering the flows' deployments.
"""
