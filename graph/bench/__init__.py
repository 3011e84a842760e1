"""One benchmark command with named suites: ``python -m graph.bench SUITE [options]``.

Suites (each writes ``<suite>.md``, ``.csv``, ``.json`` and plots into the results folder,
default ``results/<profile>``):

* ``pipeline``: the evaluation-pipeline benchmark (``tools.bench``) and the loop
  benchmark (:mod:`graph.bench.loop`, also ``python -m graph.bench_loop``);
* ``search``: agents against random search and regularised evolution at equal
  evaluation budget over several search seeds (:mod:`graph.bench.search`);
* ``baselines``: the best found design against the Template, ResNet-18 and MobileNetV2
  under the same recipe (:mod:`graph.bench.baselines`).

Profiles (:mod:`graph.bench.profiles`): ``quick`` for a 2-core CPU on the synthetic set,
``full`` for a GPU on the real ISIC 2019 set. ``--dry-run`` prints the plan only.
"""
