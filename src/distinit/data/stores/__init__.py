"""The clip store, its frame codecs, sharded stores and their checks and sizes, disk room."""
