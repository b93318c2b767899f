"""The lab: what makes and measures models, never needed to run them.

- ``data/``          procedural coloured objects, captions, splits, renders, metrics
- ``training/``      training of the embedded model, its evaluation and recipes
- ``random_model``   random-weight pipeline folders in the official layout (tests, timing)

The lab imports the runtime (`trellis_backend`); the runtime never imports the lab
(tests/test_architecture.py checks it), so the add-on zip ships without it.
Command line: ``python -m trellis_lab make-random-model ...``; training and evaluation have
their own (``python -m trellis_lab.training``, ``python -m trellis_lab.training.evaluate``).
"""
