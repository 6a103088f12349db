"""`distinit flow`: optical flow (OpenCV, RAFT), its on-disk format, the colour-wheel rendering."""
