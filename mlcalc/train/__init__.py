"""Training: the YAML recipe, AtomisticTask / ModelOutput on PyTorch Lightning, and fit.

Only ``mlcalc fit`` (and code that trains) imports this package; inference
(the calculator, ``mlcalc md``) never does, so it never pays for Lightning.
"""
