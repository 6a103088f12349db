"""Reading, decoding and writing video files, frame folders, `check-videos`, `reencode`."""
