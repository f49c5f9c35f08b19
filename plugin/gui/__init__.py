"""The QGIS side of Deep Learning Trainer: menu, toolbar, dialogs, tasks."""
