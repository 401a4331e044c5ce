"""The method registry: the one place that binds a feature extractor to a model.

Every method goes through the same few steps, so training, calibration, scanning, evaluation
and feature extraction are written once for all of them:

1. ``transform(config, ...)``: a picklable CPU callable run in loader workers, one decoded image
   -> a *sample* (a dict of tensors: crops, a resized whole image, crop boxes...). ``tries``
   views per image at inference; one augmented view in training.
2. ``build_features(config, ...)``: the device-side step that needs the generator's own
   machinery (a UNet pass, a DDIM inversion). It is built from the generator components the
   config names (like ``model_index.json``), never saved with the detector's weights, and it
   reads from or writes to a :class:`~ldmdetect.features.cache.FeatureCache` by image id.
   Methods that only look at pixels have none; a method with one overrides
   ``feature_step(config, sources, device)``, given the components to build from.
3. ``logits(model, batch, config)`` -> ``scores`` (P(generated), or the method's own score),
   ``probabilities`` (one per class of :meth:`Method.classes_for`) and ``loss``: the model's
   scoring. Whether one logit and a sigmoid or K classes and a softmax is the method's to say.

Plus whether the method ``trains`` (or only calibrates thresholds on real images), its default
defaults (:attr:`Method.default_cfg`, like timm's ``default_cfg``) and its ``collate``.

A method is a package, ``ldmdetect/methods/<name>/`` or any distribution's that names it under
the entry-point group ``ldmdetect.methods``: the method, its feature step, its settings, its
tiny settings for the contract test (:attr:`Method.tiny_settings`), its cost spec
(a ``cost`` module beside the method's: :meth:`Method.cost_specs`, for
``benchmarks/feature_cost.py``) and its demo recipe (a ``demo`` module beside it:
:meth:`Method.demo_recipe`, for ``ldmdetect demo``). The registry finds them, so adding a
method touches no other file and declares nothing twice. Three optional hooks:
:meth:`Method.explain` (what a person can look at beside the score: an evidence map, and
whatever else the method knows, e.g. AEROBLADE's closest autoencoder),
:meth:`Method.fit_features` (closed-form fitting on cached features, e.g. a
logistic-regression probe) and :meth:`Method.judge_sources` (untrained, naming the autoencoder
an image came through: attribution's cross-check). Samples, batches and the helpers on them
are :mod:`ldmdetect.methods.batch`. Training data is either aligned pairs (a real
image and its reconstruction, augmented identically by replaying one random stream) or
labelled images; both reach the method through ``transform``.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import warnings
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import numpy as np
import torch
from PIL import Image
from torch import nn

from ldmdetect.config import DetectorConfig
from ldmdetect.features.cache import FeatureCache
from ldmdetect.features.knobs import Knobs
from ldmdetect.generative.loading import resolve_device
from ldmdetect.io.identity import image_id
from ldmdetect.io.prompts import resolve_prompt
from ldmdetect.methods.batch import Batch, Sample, Transform, collate_samples, subset
from ldmdetect.methods.defaults import MethodDefaults
from ldmdetect.methods.settings import MethodSettings

if TYPE_CHECKING:
    from ldmdetect.generative.components import SDComponents
    from ldmdetect.methods.demo_recipe import DemoRecipe

#: A generator feature step's knobs (``LareConfig``, ``InversionConfig``, ``DireConfig``).
_K = TypeVar("_K", bound=Knobs)


class FeatureStep(ABC):
    """Device-side features computed from generator components, cacheable by image id."""

    #: keys this step adds to a batch; each value is a per-image tensor (B, ...).
    keys: ClassVar[tuple[str, ...]]

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """Everything that changes the output: pinned in a feature cache's ``cache.json``."""

    @abstractmethod
    def __call__(self, batch: Batch) -> dict[str, torch.Tensor]:
        """A collated batch (on any device) -> {key: float32 CPU tensor (B, ...)}."""

    def add_to(
        self, batch: Batch, cache: FeatureCache | None = None, *, device: torch.device | None = None
    ) -> Batch:
        """``batch`` with this step's features added: read from ``cache`` by image id where
        present, computed (in one call) for the rest and written back to ``cache``."""
        if "id" not in batch:
            if cache is not None:
                raise ValueError(
                    "these samples carry no content id, which a feature cache needs: prepare "
                    "them with content_id=True (Detector.preparer does when its feature_cache "
                    "is set)"
                )
            computed = self(batch)
            return {**batch, **{k: computed[k].to(device or "cpu") for k in self.keys}}
        ids: list[str] = batch["id"]
        missing = [i for i, key in enumerate(ids) if cache is None or key not in cache]
        rows: dict[int, dict[str, torch.Tensor]] = {}
        if missing:
            computed = self(subset(batch, missing))
            for j, i in enumerate(missing):
                rows[i] = {k: computed[k][j] for k in self.keys}
                if cache is not None and ids[i] not in cache:
                    cache[ids[i]] = rows[i]
        for i, key in enumerate(ids):
            if i not in rows:
                rows[i] = cache[key]  # type: ignore[index]
        out = dict(batch)
        for k in self.keys:
            out[k] = torch.stack([rows[i][k] for i in range(len(ids))]).to(device or "cpu")
        return out


class GeneratorFeatureStep(FeatureStep, Generic[_K]):
    """A feature step driven by a generator's components ({subfolder: ComponentSource dict},
    of any family: SD, SDXL, SD3, FLUX), loaded on the first image missing from the cache:
    training from a complete cache never loads the denoiser.

    ``config`` is the feature's knobs and ``prompt_template`` how each image's prompt is made
    (None where the feature reads no prompt): what every such step computes from, so each
    one's :meth:`settings` pins them in its cache."""

    def __init__(
        self,
        sources: dict[str, dict],
        config: _K,
        *,
        device: str | torch.device,
        prompt_template: str | None = None,
    ) -> None:
        self.sources, self.device = sources, resolve_device(device)
        self.config, self.prompt_template = config, prompt_template
        self._components: SDComponents | None = None

    @property
    def components(self) -> SDComponents:
        """The generator's components, loaded by :meth:`load_components` on first use."""
        if self._components is None:
            self._components = self.load_components()
        return self._components

    def load_components(self) -> SDComponents:
        """Load the components from :attr:`sources` onto :attr:`device` (any family's); a
        step that reads other parts (DIRE's pixel-space UNet) overrides this alone."""
        from ldmdetect.generative.components import load_sd_components_from

        return load_sd_components_from(self.sources, device=self.device)


@dataclass
class Explanation:
    """What a method shows of one image beside its score (:meth:`Method.explain`); methods
    subclass it to add what they know (AEROBLADE: the distance to each autoencoder)."""

    #: (h, w) in [0, 1] over the image's first view, 1 = most evidence that it was generated;
    #: None where the method has no map for this image.
    evidence: np.ndarray | None
    #: where that view lies in the image (left, top, right, bottom); None: the whole image,
    #: resized to the view.
    box: tuple[int, int, int, int] | None


@dataclass(frozen=True)
class PrepareImage:
    """A method's transform plus what every sample carries: its prompt and, with
    ``content_id``, its content id.

    Picklable, so loader workers run it; the id is taken from the pixels as decoded (after any
    robustness perturbation, before training augmentation), so it matches what ``extract``
    cached for the same file. It hashes every decoded pixel (36 MB for a 12 Mpx photo, two
    thirds as long as decoding the JPEG), so it is left out where no feature step reads it.
    """

    transform: Transform
    prompt_template: str | None = None
    content_id: bool = True

    def __call__(
        self,
        image: Image.Image,
        *,
        path: str | os.PathLike | None = None,
        class_name: str | None = None,
        rng: np.random.Generator | None = None,
    ) -> Sample:
        sample = self.transform(image, rng)
        if self.content_id:
            sample["id"] = image_id(image)
        sample["prompt"] = resolve_prompt(path, self.prompt_template, class_name)
        return sample


class Method(ABC):
    """A detection method: preprocessing + features + model + scoring, behind one name."""

    name: ClassVar[str]
    summary: ClassVar[str]
    #: False for training-free methods: ``train`` only calibrates thresholds on real images.
    trains: ClassVar[bool] = True
    #: True when training applies ``TrainConfig.augment`` (JPEG, resize, blur) to the pixels.
    #: Methods whose features come from the un-augmented image (a cached LaRE map, an
    #: inversion) only crop and flip, so an augmentation asked of them is an error, not ignored.
    pixel_augmentation: ClassVar[bool] = False
    #: True when the score is a probability, so the raw 0.5 rule means something.
    probabilistic: ClassVar[bool] = True
    #: Generator components (``model_index.json`` names) its feature step is built from.
    components: ClassVar[tuple[str, ...]] = ()
    #: The classes its outputs are over, the real one first. The score is P("generated"), or
    #: 1 - P(real) for methods without a "generated" class (attribution to generators).
    classes: ClassVar[tuple[str, ...]] = ("real", "generated")
    #: True when the method can learn which family made an image: trained on reconstructions
    #: through two or more autoencoders, its model gets one output per class of
    #: ``("real", *families)`` (see :meth:`classes_for`) and a softmax.
    attributes_families: ClassVar[bool] = False
    #: ``TrainConfig`` fields that make the method run in seconds on tiny components: what the
    #: contract test trains, saves, loads and scans every method with. ``"<tiny>"`` anywhere
    #: in them stands for a tiny Stable Diffusion pipeline's directory.
    tiny_settings: ClassVar[dict[str, Any] | None] = None
    #: The typed, frozen form of ``config.feature`` (defaults written once, there).
    Settings: ClassVar[type[MethodSettings]] = MethodSettings
    #: Backbone, input size, pretrained start and training recipe where the user names none,
    #: like timm's ``default_cfg`` (typed: a misspelt field fails where the method is defined).
    default_cfg: ClassVar[MethodDefaults] = MethodDefaults()

    def classes_for(self, config: DetectorConfig) -> tuple[str, ...]:
        """The classes a detector of this method with ``config`` outputs: ``("real",
        *config.families)`` for a family head (:attr:`attributes_families` and families in
        the config), else :attr:`classes`."""
        if self.attributes_families and config.families:
            return ("real", *config.families)
        return self.classes

    def package_module(self, name: str) -> Any:
        """The module ``name`` (``cost``, ``demo``) beside the method's own, imported on first
        use, or None where there is none: cost specs and demo recipes import what scoring
        never needs. Found by where the file is, so a method package declares nothing to be
        found; a subclass defined elsewhere takes its nearest ancestor's."""
        for cls in type(self).__mro__:
            package, _, _ = cls.__module__.rpartition(".")
            if cls is Method or not package or package == "ldmdetect.methods":
                continue
            if importlib.util.find_spec(f"{package}.{name}") is not None:
                return importlib.import_module(f"{package}.{name}")
        return None

    def settings(self, config: DetectorConfig) -> MethodSettings:
        """``config.feature`` as this method's :attr:`Settings` (validated)."""
        return self.Settings.from_feature(config.feature, method=self.name)

    def resolve(
        self, config: DetectorConfig, settings: MethodSettings, *, pretrained: bool | str
    ) -> dict[str, Any]:
        """What a fresh config leaves open and the method settles once, when the config is
        made (:func:`ldmdetect.methods.make_config`): {DetectorConfig field: value}, e.g. the
        ``feature`` dict with the VAE's latent channels recorded. Nothing later writes into
        a config, so a detector does not depend on what was built before it was saved."""
        return {}

    def cost_specs(self) -> Sequence[Any]:
        """Per-image cost specs on full-size architectures
        (:class:`ldmdetect.methods.cost.CostSpec`), the default configuration first; what
        ``benchmarks/feature_cost.py`` measures: the ``cost_specs()`` of the ``cost`` module
        beside the method's. None without one: the benchmark then stops, naming the method."""
        module = self.package_module("cost")
        return module.cost_specs() if module is not None else ()

    def demo_recipe(self) -> DemoRecipe | None:
        """How ``ldmdetect demo`` trains this method, with the demo's default settings: the
        one :class:`ldmdetect.methods.demo_recipe.DemoRecipe` subclass that the ``demo``
        module beside the method's defines. None without one: the method is left out of the
        demo, which says so when asked for it."""
        from ldmdetect.methods.demo_recipe import DemoRecipe

        module = self.package_module("demo")
        if module is None:
            return None
        recipes = [
            value
            for value in vars(module).values()
            if isinstance(value, type)
            and issubclass(value, DemoRecipe)
            and value.__module__ == module.__name__
        ]
        if len(recipes) != 1:
            found = ", ".join(r.__name__ for r in recipes) or "none"
            raise TypeError(
                f"{module.__name__} must define exactly one DemoRecipe subclass, the "
                f"{self.name!r} demo's recipe (found: {found})"
            )
        return recipes[0]()

    def defaults(self) -> dict[str, Any]:
        """Deprecated: :attr:`default_cfg` (typed), and ``Settings().to_feature()`` for the
        feature defaults. The former dict: {backbone, input_size, pretrained, training:
        {optimizer, lr, wd, grad_clip}, feature}."""
        warnings.warn(
            "Method.defaults() is deprecated: read Method.default_cfg", DeprecationWarning, 2
        )
        return self.default_cfg.to_default_config() | {"feature": self.Settings().to_feature()}

    def required_components(self, feature: dict[str, Any]) -> tuple[str, ...]:
        """The generator components these feature settings need (``components`` by default)."""
        return self.components

    def normalization(self, backbone: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) the backbone expects: timm's pretrained config by default."""
        from ldmdetect.models.classifier import backbone_normalization

        return backbone_normalization(backbone)

    @abstractmethod
    def build_model(self, config: DetectorConfig, *, pretrained: bool | str = False) -> nn.Module:
        """A fresh model for ``config`` (weights are loaded by the caller)."""

    def logits_per_view(self, config: DetectorConfig) -> int:
        """How many logits :meth:`build_model`'s network gives per view: one per class for a
        family head, else one (a sigmoid gives P(generated)). A method whose network ends in
        a softmax over ``("real", "generated")`` says 2. What an ensemble of its networks
        mixes over (:meth:`build`)."""
        classes = self.classes_for(config)
        return len(classes) if len(classes) > 2 else 1

    def build(self, config: DetectorConfig, *, pretrained: bool | str = False) -> nn.Module:
        """The model a detector directory's weights load into: :meth:`build_model`'s network,
        or ``config.members`` of them read as one (:class:`~ldmdetect.models.ensemble.Ensemble`,
        a deep ensemble of independently trained networks)."""
        if config.members == 1:
            return self.build_model(config, pretrained=pretrained)
        from ldmdetect.models.ensemble import Ensemble

        if config.members < 1 or not self.trains:
            raise ValueError(
                f"{self.name} cannot hold {config.members} networks: an ensemble needs two or "
                "more trained networks of a method that trains"
            )
        networks = [self.build_model(config, pretrained=pretrained) for _ in range(config.members)]
        return Ensemble(networks, self.logits_per_view(config))

    @abstractmethod
    def transform(
        self, config: DetectorConfig, *, tries: int = 1, train: bool = False, augment: Any = None
    ) -> Transform:
        """The picklable CPU step: decoded image -> sample (see :data:`Sample`).

        ``train``: training views, drawn from the loader's rng (one random view per image for
        methods that sample views; a method whose view is fixed keeps it), instead of the
        ``tries`` seeded ones. ``augment`` (training only, and only where
        :attr:`pixel_augmentation`): the pixel augmentation those views get.
        """

    def prepare(
        self,
        config: DetectorConfig,
        *,
        tries: int = 1,
        train: bool = False,
        augment: Any = None,
        content_id: bool | None = None,
        explain: bool = False,
    ) -> PrepareImage:
        """:meth:`transform` wrapped to add each sample's prompt and, where ``content_id``,
        its content id. None: whatever a run with a feature cache needs
        (:meth:`needs_content_id` with ``cached=True``), as extraction and training may cache.
        ``explain``: :meth:`explain_transform` instead, for the batch :meth:`explain` reads.

        An ``augment`` the transform would not apply (outside training, or for a method
        without :attr:`pixel_augmentation`) is refused rather than ignored.
        """
        if augment is not None and not train:
            raise ValueError("augmentation applies to training views only: pass train=True")
        if augment is not None and not self.pixel_augmentation:
            raise ValueError(
                f"method {self.name!r} does not augment pixels: its features come from the "
                "un-augmented image (training views are only cropped and flipped)"
            )
        if content_id is None:
            content_id = self.needs_content_id(config, cached=True)
        transform = (
            self.explain_transform(config)
            if explain
            else self.transform(config, tries=tries, train=train, augment=augment)
        )
        return PrepareImage(
            transform,
            config.feature.get("prompt_template"),
            content_id,
        )

    def needs_content_id(self, config: DetectorConfig, *, cached: bool) -> bool:
        """Whether samples must carry their content id: the key of a feature cache (when
        ``cached``), and of per-image noise for feature steps that seed it by image (those
        methods override this to say so). Methods that read pixels only never need it. A
        method written before :meth:`feature_step` existed overrides :meth:`build_features`
        itself, and is a method with a feature step too."""
        own = type(self)
        return cached and (
            own.feature_step is not Method.feature_step
            or own.build_features is not Method.build_features
        )

    def build_features(
        self,
        config: DetectorConfig,
        *,
        device: str | torch.device = "auto",
        components: dict[str, dict] | None = None,
    ) -> FeatureStep | None:
        """The device-side feature step (:meth:`feature_step`), or None for methods that read
        pixels only. ``components`` overrides the sources recorded in ``config.components``
        (e.g. a local copy of a hub pipeline)."""
        return self.feature_step(config, components or config.components, device)

    def feature_step(
        self, config: DetectorConfig, sources: dict[str, dict], device: str | torch.device
    ) -> FeatureStep | None:
        """What :meth:`build_features` builds, from the generator components ``sources``
        (the caller's override, else the config's): the hook a method with a feature step
        overrides. None by default: the method reads pixels only."""
        return None

    def generator_sources(self, sources: dict[str, dict]) -> dict[str, dict]:
        """``sources``, or an error naming the method when there are none: for a feature
        step that needs a generator."""
        if not sources:
            raise ValueError(f"{self.name} needs generator components (--pipeline ID_OR_DIR)")
        return sources

    def collate(self, samples: Sequence[Sample]) -> Batch:
        """Stack samples into a batch: tensors along a new first dim, strings into lists."""
        return collate_samples(samples)

    @abstractmethod
    def logits(self, model: nn.Module, batch: Batch, config: DetectorConfig) -> torch.Tensor:
        """Batch on the model's device (features added) -> logits for T views: (B, T) for
        one logit, (B, T, K) for K (see :meth:`class_logits`)."""

    def class_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits as (B, T, K): one logit per view ((B, T), a binary method's) gets K = 1."""
        return logits if logits.dim() == 3 else logits.unsqueeze(-1)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits -> per-class probabilities (B, T, len(classes)), in float64: float32's
        sigmoid is exactly 1.0 from a logit of about 17 on, and a threshold cannot tell apart
        scores that have all become one number. One logit: a sigmoid gives P(classes[1]);
        several: a softmax."""
        logits = self.class_logits(logits).double()
        if logits.shape[-1] == 1:
            p = torch.sigmoid(logits)
            return torch.cat([1 - p, p], dim=-1)
        return logits.softmax(dim=-1)

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, ...) -> the score per view (B, T): P(generated) (see :attr:`classes`).

        Logits of another count than :attr:`classes` come from a family head (one per class
        of ``("real", *families)``, :meth:`classes_for`), which has no "generated" class:
        its score is 1 - P(real)."""
        k = self.class_logits(logits).shape[-1]
        if len(self.classes) == 2 and k == 1:
            return torch.sigmoid(self.class_logits(logits).double())[..., 0]
        probabilities = self.probabilities(logits)
        if "generated" in self.classes and k == len(self.classes):
            return probabilities[..., self.classes.index("generated")]
        return 1 - probabilities[..., 0]

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Training loss of one view per image: logits (B, ...) against labels (B,), class
        indices: binary cross-entropy on one logit, cross-entropy on several."""
        if logits.dim() > 1 and logits.shape[-1] > 1:
            return nn.functional.cross_entropy(logits.float(), labels.long())
        logits = logits.reshape(labels.shape)
        return nn.functional.binary_cross_entropy_with_logits(logits.float(), labels.float())

    # Optional hooks. A method overrides them only when it has what they ask for.

    def explain(
        self, model: nn.Module, batch: Batch, config: DetectorConfig, features: FeatureStep | None
    ) -> list[Explanation] | None:
        """One :class:`Explanation` per image of ``batch`` (one view each, features added):
        an evidence map for a person to look at next to the score, and whatever else the
        method knows of the image. None (the default): the method has nothing to show.
        ``features`` is the feature step the batch went through, None for a method without
        one (it names the generator components a method may attribute the image to); the
        detector always passes it."""
        return None

    def explain_transform(self, config: DetectorConfig) -> Transform:
        """The transform of the samples :meth:`explain` reads: the scoring one with one view
        by default. A method whose map covers more of the image than its scoring views (``ae``
        tiles the whole image) adds what its map needs here, so scoring never carries it."""
        return self.transform(config, tries=1)

    @property
    def explains(self) -> bool:
        """Whether :meth:`explain` is the method's own (callers offer an evidence map)."""
        return type(self).explain is not Method.explain

    def fit_features(
        self, model: nn.Module, features: Batch, labels: torch.Tensor, config: DetectorConfig
    ) -> dict[str, Any]:
        """Fit ``model`` in closed form on the feature step's outputs over the training set
        ({key: (N, ...)}, labels (N,) in {0, 1}) instead of the gradient loop (a linear probe
        on frozen features); returns a summary for the training history."""
        raise NotImplementedError(f"method {self.name!r} trains with the gradient loop")

    def judge_sources(
        self, sources: Sequence[Mapping[str, Any]], input_size: int
    ) -> dict[str, Any]:
        """The ``TrainConfig`` fields that make this method, untrained, a judge of which of
        ``sources`` (autoencoder source dicts) each image came through, with views of about
        ``input_size``: its explanations' ``distances`` then hold one entry per source, in
        that order, nearest = most likely. Attribution's cross-check asks it."""
        raise ValueError(f"method {self.name!r} cannot judge which autoencoder made an image")

    @property
    def fits_features(self) -> bool:
        return type(self).fit_features is not Method.fit_features


_M = TypeVar("_M", bound=type[Method])
_REGISTRY: dict[str, type[Method]] = {}
#: Distributions register method packages under this entry-point group: the entry point names
#: a module (importing it registers the method) or a :class:`Method` subclass.
ENTRY_POINT_GROUP = "ldmdetect.methods"
_LOADED_ENTRY_POINTS: set[tuple[str, str]] = set()


def load_entry_points() -> None:
    """Import the method packages other distributions name under :data:`ENTRY_POINT_GROUP`
    (each once). One that fails to import is reported and skipped, so a broken plug-in
    cannot take the built-in methods down with it."""
    import warnings
    from importlib.metadata import entry_points

    for entry in entry_points(group=ENTRY_POINT_GROUP):
        key = (entry.name, entry.value)
        if key in _LOADED_ENTRY_POINTS:
            continue
        _LOADED_ENTRY_POINTS.add(key)
        try:
            loaded = entry.load()
        except Exception as err:  # a plug-in's own error, whatever its type
            warnings.warn(
                f"method entry point {entry.name} = {entry.value} failed to load "
                f"({type(err).__name__}: {err}); skipped",
                stacklevel=2,
            )
            continue
        is_method = isinstance(loaded, type) and issubclass(loaded, Method)
        if is_method and _REGISTRY.get(loaded.name) is not loaded:
            register_method(loaded)


def register_method(cls: _M) -> _M:
    """Class decorator: make a method available by its ``name``. A ``default_config`` dict
    (the untyped form before :attr:`Method.default_cfg`) is read into ``default_cfg``, with a
    deprecation warning."""
    if cls.name in _REGISTRY:
        raise ValueError(f"method {cls.name!r} is already registered")
    if isinstance(vars(cls).get("default_config"), Mapping):
        cls.default_cfg = MethodDefaults.from_default_config(cls.default_config, method=cls.name)
    _REGISTRY[cls.name] = cls
    return cls


def unregister_method(name: str) -> None:
    """Forget the method ``name`` (a throwaway method in a test); unknown names are ignored."""
    _REGISTRY.pop(name, None)


def list_methods() -> list[str]:
    """Every registered method's name: the built-in packages and the entry points'."""
    load_entry_points()
    return sorted(_REGISTRY)


def get(name: str) -> Method:
    """The method registered as ``name``; unknown names get close matches in the error."""
    if name not in _REGISTRY:
        load_entry_points()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.4)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(
            f"unknown method {name!r}.{hint} Known methods: {', '.join(list_methods())}."
        )
    return _REGISTRY[name]()


def normalize(batch: torch.Tensor, config: DetectorConfig, dtype: torch.dtype) -> torch.Tensor:
    """uint8 images (..., 3, H, W) -> float ``dtype`` normalised with the detector's mean/std."""
    mean = torch.tensor(config.mean, device=batch.device, dtype=dtype).view(3, 1, 1)
    std = torch.tensor(config.std, device=batch.device, dtype=dtype).view(3, 1, 1)
    return (batch.to(dtype) / 255.0 - mean) / std
