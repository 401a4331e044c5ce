"""The demo's settings: what ``ldmdetect demo`` runs, shared by the demo, its recipes
(``engine.demo_recipes``) and its photo sets (``engine.demo_photos``).

Settings every method shares live here; each method's own are its demo recipe's fields
(``ldmdetect/methods/<name>/demo.py``), one recipe per method in ``method_settings``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ldmdetect import methods
from ldmdetect.methods.demo_recipe import DemoRecipe


def demo_recipes() -> dict[str, DemoRecipe]:
    """Every registered method's demo recipe, with its default settings, by method name."""
    recipes = {name: methods.get(name).demo_recipe() for name in methods.list_methods()}
    return {name: recipe for name, recipe in recipes.items() if recipe is not None}


def default_method_settings() -> dict[str, DemoRecipe]:
    """Every registered method's demo recipe with its own defaults."""
    return demo_recipes()


#: The shipped generators, each paired with the one of the other family.
SHIPPED_PAIRS = {"mini": "mini-flow", "mini-flow": "mini"}


@dataclass
class DemoConfig:
    generator: str = "mini"  # "mini" (shipped), "tiny" (random, smoke test) or a pipeline path/id
    # A generator of another family that no detector trains on, whose images (same prompts and
    # seeds) get their own rows: does what a method learned transfer? "auto": the other
    # shipped generator when ``generator`` is one of them ("mini" <-> "mini-flow"), else none;
    # None: no such rows; or a --generator value.
    other_generator: str | None = "auto"
    # The aligned pairs (real crops and their reconstructions through the generator's
    # autoencoder) ae trains on: crop side and crops per training photo.
    input_size: int = 64
    train_crops_per_image: int = 32
    eval_size: int = 128  # larger than the input, so that 10-try inference has room to move
    eval_crops_per_image: int = 16
    generated_images: int = 48
    generation_steps: int = 25
    guidance_scale: float = 3.0  # the mini LDM trains with caption dropout for this
    heldout_subjects: tuple[str, ...] | None = None  # default: the generator's own held-out
    heldout_count: int = 3  # subjects held out when the generator names none
    batch_size: int = 16
    perturbations: tuple[str, ...] = ("jpeg:75",)
    format_control: int = 90
    methods: tuple[str, ...] = ("ae", "lare2", "fakeinversion")
    # Each method's own demo settings, by method name: its recipe (methods/<name>/demo.py).
    # A method missing here runs with its recipe's defaults.
    method_settings: Mapping[str, DemoRecipe] = field(default_factory=default_method_settings)
    # SynRIS rows: each method on the generated images vs. the held-out reals that a reverse
    # image search over them matches to the fakes, next to all held-out reals.
    synris: bool = True
    # The real-vs-generated training set of the methods that train on labelled images:
    # eval_size crops of the training photos vs. images the generator made from its training
    # captions (methods.demo_recipe.real_vs_generated).
    real_train_crops_per_image: int = 5
    generated_train_images: int = 48
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
    # The aligned pairs' training crops (ae's) are cut at native resolution and from copies
    # downscaled by these factors, as users scan both; JPEG reals' reconstructions are
    # frequency-aligned (re-encoded with the real's own quantisation tables;
    # ReconstructConfig.align_jpeg).
    pair_scales: tuple[float, ...] = (1.0, 0.5)
    align_jpeg: bool = True
    # Shipped photo crops per split used to calibrate and to test (0 = all of them).
    # Methods whose features run the generator on every image (DemoRecipe.costly: lare2's
    # UNet passes, fakeinversion's inversions) take a subset, spread over the sources, that
    # still resolves the 1% threshold (>= 99 reals); its cost is in benchmarks/results/NOTES.md.
    photo_limit: int = 0
    costly_photo_limit: int = 120
    # torch threads; None = torch's default (every core). When other processes hold the
    # cores, --threads 1 avoids thread-sync stalls (measurements in benchmarks/results/NOTES.md).
    threads: int | None = None
    # False: train (and calibrate) every method but evaluate none, for callers that score the
    # detectors on their own test sets (the cross-family benchmark): the same detectors,
    # without the 10-try and robustness rows' cost.
    evaluate: bool = True

    def other_family(self) -> str | None:
        """The --generator value of the other family's generator, or None (see
        ``other_generator``)."""
        if self.other_generator != "auto":
            return self.other_generator
        return SHIPPED_PAIRS.get(self.generator)

    def recipe(self, name: str) -> DemoRecipe:
        """Method ``name``'s demo recipe: ``method_settings``' or else the recipe's defaults."""
        if name in self.method_settings:
            return self.method_settings[name]
        recipes = demo_recipes()
        if name not in recipes:
            raise ValueError(f"the demo has no recipe for {name!r} ({', '.join(recipes)})")
        return recipes[name]
