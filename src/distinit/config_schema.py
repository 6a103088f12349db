"""The run configuration's schema: every section and key, its default and its rules (`checked`).

How a file and `key=value` overrides become one of these is `distinit.config`'s work.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from distinit.config_rules import checked

KINETICS_MEAN = [0.43216, 0.394666, 0.37645]  # torchvision's video models' normalisation
KINETICS_STD = [0.22803, 0.22145, 0.216989]
# How Kinetics downloaders name a clip (data.name_template's default).
KINETICS_NAME_TEMPLATE = "{youtube_id}_{time_start:06d}_{time_end:06d}.mp4"


# Sizes that are allocated whole: 1e8 must be one line as the config loads, not a MemoryError.
MAX_CLIP_LEN, MAX_TEST_CLIPS, MAX_CACHE_CROPS, MAX_BATCH = 4096, 1000, 1000, 4096
MAX_PIXELS, MAX_WIDTH, MAX_QUEUE = 4096, 1024, 2**20
QUEUE_WHY = ("the queue keeps this many embeddings in memory, and every step compares each clip "
             "with all of them (MoCo's is 65536)")
MAX_SEED, SEED_WHY = 2**32 - 1, "numpy's seeds are 32-bit"


@dataclass
class DataConfig:
    # Unlabeled videos (distill, extract-features): a folder (searched recursively) or a list file.
    videos: str = ""
    extensions: list[str] = field(default_factory=lambda: ["mp4", "avi", "webm", "mkv", "mov"])
    # Still images in ImageFolder layout (train-image): training and evaluation folders.
    images: str = ""
    images_test: str = ""
    # Labeled videos (finetune, eval): format hmdb51 | ucf101 | csv | kinetics_csv | list.
    format: str = checked("hmdb51", choices=("hmdb51", "ucf101", "csv", "kinetics_csv", "list"))
    video_root: str = ""
    split_dir: str = ""  # folder of official split files, or the CSV file for format=csv
    # format=kinetics_csv: a clip's path under video_root from its CSV line's {youtube_id},
    # {time_start}, {time_end} (whole seconds) and {label} ({label_underscored}: spaces as _).
    name_template: str = KINETICS_NAME_TEMPLATE
    # Frame folders: the frames' file name with one integer field, e.g. MMAction2's
    # "img_{:05d}.jpg" (frames ordered by it); empty: every image sorted by name, except the
    # flow_*, x_*, y_* flow images stored beside RGB frames.
    frame_template: str = ""
    split: int = checked(1, min=1, max=100)
    clip_len: int = checked(8, min=1, max=MAX_CLIP_LEN, why=(
        "a clip is held in memory whole, padded with its last frame on shorter videos "
        f"({MAX_CLIP_LEN} frames are 2.7 minutes at 25 fps)"))
    stride: int = checked(1, min=1, max=MAX_CLIP_LEN, why=(
        "frames between a clip's frames; a clip spans clip_len x stride frames"))
    # Short side before cropping; 0 keeps the decoded size.
    resize: int = checked(128, min=0, max=MAX_PIXELS, why="frames are held in memory at this size")
    crop: int = checked(112, min=1, max=MAX_PIXELS, why="clips are held in memory at this size")
    flip: bool = True
    # Scale jitter in training: random windows of [min, max] of the frame's area, resized to
    # data.crop (RandomResizedCrop); empty = plain random crops of data.crop.
    scale: list[float] = checked([], sizes=(0, 2), gt=0, max=1)
    # Colour augmentation of RGB training clips, after the crop (MoCo v2's --aug-plus:
    # jitter [0.4, 0.4, 0.4, 0.1] with p 0.8, grayscale_p 0.2, blur_p 0.5); all off by default.
    # color_jitter: [brightness, contrast, saturation, hue] strengths (hue <= 0.5), applied in
    # a random order with probability color_jitter_p; empty = off. grayscale_p: probability of
    # a grayscale clip. blur_p: probability of a Gaussian blur with sigma drawn from blur_sigma
    # (kernel ~10% of data.crop, odd). color_per_frame: false draws once per clip, so its
    # frames change colour together; true draws every frame afresh (auxSKD's jitter).
    color_jitter: list[float] = checked([], sizes=(0, 4), min=0)
    color_jitter_p: float = checked(0.8, min=0, max=1)
    grayscale_p: float = checked(0.0, min=0, max=1)
    blur_p: float = checked(0.0, min=0, max=1)
    blur_sigma: list[float] = checked([0.1, 2.0], sizes=(2,), gt=0)
    color_per_frame: bool = False
    num_test_clips: int = checked(10, min=1, max=MAX_TEST_CLIPS, why=(
        "every test video is evaluated on all of them, and more than a video has starts "
        "repeat the same frames (the paper uses 10)"))
    # Spatial crops per test clip: 1, the centre (torchvision's reference, and every number in
    # this project's docs; the DistInit paper takes its evaluation from R(2+1)D [44] and states
    # 10 clips, not their crops); 3, both ends and the centre of the long side (SlowFast's and
    # MMAction2's "3 crops x 10 clips"). Video accuracy averages the softmax over all of them.
    test_crops: int = checked(1, choices=(1, 3))
    # Input normalisation; empty = what the initial weights expect: the image model's own for
    # model.init=inflate, the pretraining run's for model.init=checkpoint, else Kinetics'.
    mean: list[float] = checked([], sizes=(0, 3))
    std: list[float] = checked([], sizes=(0, 3), gt=0)
    backend: str = "pyav"
    # Where videos are decoded: cpu, or cuda (NVDEC; data.backend=torchcodec only; the frames
    # are copied back to the CPU, sparing it the decoding). CUDA cannot start in forked loader
    # workers, so cuda needs data.num_workers=0 unless data.cache=store (the store is built
    # before the loader starts; its workers only read it).
    decode_device: str = checked("cpu", choices=("cpu", "cuda"))
    # Optical flow written by `distinit flow SRC OUT`: OUT, and SRC when it is not data.videos
    # (unlabeled) or data.video_root (labeled).
    flow_dir: str = ""
    flow_root: str = ""
    input: str = checked("rgb", choices=("rgb", "flow"))  # what the student sees: RGB, or flow
    # A flow clip as its (dx, dy) vectors (2 channels, pixels / 20), or `rgb`: each frame's flow
    # as a colour-wheel image (3 channels in [0, 1]), as MSCL's MoDist feeds it (data/flow/render.py)
    flow_format: str = checked("vectors", choices=("vectors", "rgb"))
    # memory | disk: decode each video once, cut clips from the cache. memory: kept by each
    # process that decodes (loader workers last the whole run, so each fills its own copy);
    # disk: one .npy per video in cache_dir, shared by every process and run. store: frames
    # decoded and resized to data.resize once, uint8 in memory-mapped shards under cache_dir
    # (`distinit store-clips`, or built when a run starts); a clip reads only its frames.
    cache: str = checked("none", choices=("none", "memory", "disk", "store"))
    cache_dir: str = ""
    # How a clip store (cache=store) keeps its frames (`data/stores/frame_codec.py`): raw uint8, or
    # jpeg at store_quality (4:2:0; ~6x smaller at 90 on natural-like frames, and a clip then
    # decodes its frames: docs/BENCHMARKS.md). A store made with another codec or quality is not
    # read, and store-clips refuses to overwrite it: use another cache_dir.
    store_codec: str = checked("raw", choices=("raw", "jpeg"))
    store_quality: int = checked(90, min=1, max=100)
    num_workers: int = checked(4, min=0, max=256, why="each worker is a process")


@dataclass
class ModelConfig:
    arch: str = "r2plus1d_18"  # a registered student or package.module:function
    width: int = checked(64, min=1, max=MAX_WIDTH, why=(
        "channels of the first stage; the last has 8 times as many (the paper's 64 gives 512), "
        "and the weights grow with the square"))
    # Blocks per stage; empty = the arch's own.
    layers: list[int] = checked([], min=1, max=64, why="ResNet-200 has 36 blocks in a stage")
    stem_stride: int = checked(2, min=1, max=64)
    # (temporal, spatial); empty: the arch's own.
    stem_kernel: list[int] = checked([], sizes=(0, 2), min=1, max=64)
    init: str = checked("scratch", choices=("scratch", "checkpoint", "inflate"))
    weights: str = ""  # checkpoint (init=checkpoint) or 2D image checkpoint (init=inflate)
    linear_probe: bool = False  # fine-tune only the new head on a frozen backbone


@dataclass
class TeacherConfig:
    spec: str = ""  # torchvision:resnet50 | timm:NAME | torchscript:PATH | ckpt:PATH
    weights: str = ""
    arch: str = ""  # architecture for ckpt:PATH
    weight: float = checked(1.0, min=0)  # this teacher's loss weight (Eq. 3)
    input_size: int = checked(0, min=0, max=MAX_PIXELS, why="the teacher's input size in pixels")  # 0: its own
    mean: list[float] = checked([], sizes=(0, 3))  # empty = the teacher's own
    std: list[float] = checked([], sizes=(0, 3), gt=0)


@dataclass
class DistillConfig:
    teachers: list[TeacherConfig] = field(default_factory=list)
    # Which frames of the clip the teachers see: one centre frame, one random, or num_frames random.
    frames: str = checked("random", choices=("center", "random", "multi"))
    num_frames: int = checked(4, min=1, max=MAX_CLIP_LEN)  # frames averaged when frames=multi
    temperature: float = checked(1.0, gt=0)
    # Multiply the soft-target loss by temperature^2 (Hinton et al. 2015), so that tau > 1 does
    # not also cut the gradient (and so the learning rate) tau^2-fold; no effect at tau = 1.
    tau_squared: bool = True
    # ce: soft-target cross-entropy (Eq. 2); mse: on the logits.
    loss: str = checked("ce", choices=("ce", "mse"))
    # Drop examples whose target entropy (nats) is above this; 0 = keep all.
    max_entropy: float = checked(0.0, min=0)
    # Corpus videos set aside (the same ones in every run) to measure, after each epoch, how
    # well the student agrees with its teachers on clips it never trained on; at most 1/10 of
    # the corpus. 0 = off.
    holdout: int = checked(256, min=0)
    # Or name the held-out videos: a folder or a list file, measured the same way after each
    # epoch (keep holdout=0); none may be a training video. E.g. `distinit real-demo`'s
    # held-out segments, cut from the same footage as the training ones.
    holdout_videos: str = ""
    # The teacher-target cache (`distinit cache-targets`): a folder; set, the student distills
    # from the stored logits instead of running the teachers in every step (built first when
    # the folder holds no finished cache; one made for other settings is refused).
    target_cache: str = ""
    cache_crops: int = checked(8, min=1, max=MAX_CACHE_CROPS, why=(  # boxes from the crop policy
        "the teachers run on every frame of every crop, and the cache keeps crops x frames x "
        "classes logits per video and teacher (the default is 8)"))
    cache_frame_step: int = checked(1, min=1)  # store every Nth frame (nearest one is used)
    # float16: every logit; topk: the top cache_topk logits and the log-mass of the rest.
    cache_dtype: str = checked("float16", choices=("float16", "topk"))
    cache_topk: int = checked(10, min=1, max=100_000)
    cache_shard_size: int = checked(64, min=1, max=100_000)  # videos per shard file


@dataclass
class OptimConfig:
    optimizer: str = checked("sgd", choices=("sgd", "adamw"))
    lr: float = checked(0.01, gt=0, max=10, why=(
        "SGD and AdamW diverge long before; the paper's are 0.01 and 0.002"))
    momentum: float = checked(0.9, min=0, lt=1)
    weight_decay: float = checked(1e-4, min=0)
    schedule: str = checked("step", choices=("step", "cosine"))
    warmup_epochs: float = checked(0.0, min=0, max=1e6)
    step_epochs: float = checked(10.0, gt=0, max=1e6)  # step schedule: lr times gamma every step_epochs
    gamma: float = checked(0.1, gt=0, max=1)
    epochs: float = checked(45.0, gt=0, max=1e6, why=(
        "a schedule this long would never end (the paper's is 45)"))
    # Clips per epoch, drawn across passes over the data; 0 = one pass.
    epoch_size: int = checked(0, min=0, max=10**12, why=(
        "clips per epoch (the paper's is 1e6; Kinetics-400 has 2.4e5 videos)"))
    batch_size: int = checked(32, min=1, max=MAX_BATCH, why=(  # per process
        f"per process; the activations of more than {MAX_BATCH} clips fit no accelerator"))
    accum_steps: int = checked(1, min=1, max=MAX_BATCH)
    clip_grad: float = checked(0.0, min=0)  # max gradient norm; 0 = off
    head_lr_mult: float = checked(1.0, gt=0)  # fine-tuning: lr multiplier for the new head


@dataclass
class Config:
    out_dir: str = "runs/default"
    seed: int = checked(0, min=0, max=MAX_SEED, why=SEED_WHY)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = checked("auto", choices=("auto", "bf16", "fp32"))  # auto: bf16 where supported
    # The channels_last_3d memory format.
    channels_last: str = checked("auto", choices=("auto", "on", "off"))
    threads: int = checked(0, min=0, max=1024)  # torch intra-op threads; 0 = torch's default
    log_every: int = checked(20, min=1)
    ckpt_every: int = checked(500, min=1)  # steps between checkpoints (and one at the end)
    # Stop after this many steps (schedule unchanged); 0 = run to the end.
    stop_after: int = checked(0, min=0)
    # Under torchrun: seconds a collective waits for a rank that does not answer before the job
    # stops with one line naming it (a node that died must not hang the others for gloo's 30 min).
    dist_timeout: float = checked(600.0, min=1.0)
    eval_every: int = checked(0, min=0)  # epochs between evaluations in fine-tuning; 0: at the end
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
