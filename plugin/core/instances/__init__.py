"""Instance segmentation: one polygon per object (Mask R-CNN), trained from polygon labels of a
labeling project and applied by Segment Objects."""
