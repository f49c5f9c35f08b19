"""Processing provider ``dltrainer``: one algorithm per job kind (see algorithms.py)."""
