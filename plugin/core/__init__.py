"""The machine-learning core: no QGIS imports here (it runs in workers, the CLI and on servers)."""
