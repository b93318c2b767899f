"""Backend server: ``python -m trellis_backend.server --model <folder>``.

Speaks the line-delimited JSON protocol in ``protocol.py`` (a byte-identical
copy of the add-on's ``addon/protocol.py``) over stdin/stdout and runs one
generation job at a time in a worker thread. Importing this package does not
import torch; the pipeline is loaded on the first job.
"""
