"""The fields a model card of each family holds besides the common ones, for tests that write
hand-made cards (no torch: QGIS-side tests use them)."""

CARD_FIELDS = {
    "pixel_segmentation": {"architecture": "unet", "encoder": "resnet18"},
    "object_detection": {"architecture": "fcos_resnet18", "encoder": "", "score_threshold": 0.3,
                         "nms_iou": 0.5, "max_box_px": 30.0},
    "instance_segmentation": {"architecture": "maskrcnn_resnet18", "encoder": "",
                              "score_threshold": 0.5, "nms_iou": 0.5, "max_box_px": 30.0},
    "grid": {"architecture": "resnet18", "multi_label": False, "grid_size": 32},
    "chip_classification": {"architecture": "resnet18", "multi_label": False, "max_side": 32},
    "pixel_regression": {"architecture": "unet", "encoder": "resnet18", "loss": "huber",
                         "target": {"name": "height", "unit": "m", "mean": 5.0, "std": 2.0}},
}
