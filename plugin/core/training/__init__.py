"""The one training engine every model family uses (see ``engine.py``) and the task interface a
family implements (``task.py``). Nothing heavy at import time."""
