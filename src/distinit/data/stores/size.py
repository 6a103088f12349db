"""What a clip store (`data/stores/clip_store.py`) takes on disk, estimated from a corpus sample
(`data/corpus/sample.py`) before it is built: `distinit store-clips` checks the room with it and
`distinit plan` shows it. Pure arithmetic: the same layout `build_clip_store` writes, every frame
of every video at short side `data.resize`, in safetensors shards (`data/stores/shards.py`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from distinit.data.clips.transforms import output_size
from distinit.data.corpus.sample import CorpusSample, Estimate, VideoShape, extrapolate

# A shard file's own bytes besides its arrays' entries: the header's length (8 bytes), its
# braces and at most 7 bytes padding the header to a multiple of 8.
SHARD_BYTES = 17


def raw_frame_bytes(height: int, width: int) -> int:
    """One stored frame of the raw store: uint8 RGB."""
    return height * width * 3


def array_entry_bytes(name: str, shape: Sequence[int], file_bytes: float) -> int:
    """What a safetensors header spends on one array: its JSON entry, with data offsets as wide as
    the file's size (an upper bound: earlier arrays have shorter offsets)."""
    dims = ",".join(str(int(d)) for d in shape)
    return (len(f'"{name}":{{"dtype":"F16","shape":[{dims}],"data_offsets":[,]}},')
            + 2 * len(str(int(file_bytes))))


def stored_size(shape: VideoShape, resize: int) -> tuple[int, int]:
    """(H, W) of a video's frames in a store or cache: short side `resize`, 0: as decoded."""
    return output_size(shape.height, shape.width, resize) if resize else (shape.height,
                                                                           shape.width)


def clip_store_bytes(sample: CorpusSample, resize: int, shard_size: int = 16,
                     bytes_per_frame: Callable[[int, int], float] = raw_frame_bytes) -> Estimate:
    """The shard bytes of the store of the sampled corpus: per video one array `frames` of every
    frame at short side `resize`, `bytes_per_frame(H, W)` each (raw: uint8 RGB; a compressed
    store passes its own), plus the safetensors headers. Manifest and checksum records (a few
    hundred bytes a video at most) are not counted."""
    name = f"v{shard_size - 1}/frames"  # the longest key of a shard

    def per_video(s: VideoShape) -> float:
        h, w = stored_size(s, resize)
        data = s.num_frames * bytes_per_frame(h, w)
        return data + array_entry_bytes(name, (s.num_frames, h, w, 3), shard_size * data)

    est = extrapolate(sample, per_video)
    return Estimate(est.value + SHARD_BYTES * -(-sample.videos // shard_size), est.rel_error)
